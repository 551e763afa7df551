import { HTTPException } from 'hono/http-exception';
import type { ClientErrorStatusCode, ContentfulStatusCode, ServerErrorStatusCode } from 'hono/utils/http-status';

export type ErrorStatus = ClientErrorStatusCode | ServerErrorStatusCode;

/**
 * The one body of every HTTP failure, from the Worker's routes and from the account object's
 * WebSocket connects alike (docs/protocol.md#changes-route and #websocket-routes): what went wrong and, when it helps, where.
 */
export interface ErrorBody {
  error: string;
  detail?: unknown;
}

/** An HTTPException that carries its whole body, so that the Worker's one onError renders the detail too. */
class ErrorBodyException extends HTTPException {
  override name = 'ErrorBodyException';
  constructor(
    status: ErrorStatus,
    readonly body: ErrorBody,
    cause: unknown,
    readonly headers: Record<string, string> | undefined,
  ) {
    super(status, { message: body.error, cause });
  }
}

/** A failure for a route to throw; `app.onError` answers it. */
export function httpError(status: ErrorStatus, body: ErrorBody, options?: { cause?: unknown; headers?: Record<string, string> }): HTTPException {
  return new ErrorBodyException(status, body, options?.cause, options?.headers);
}

/** The body of any HTTPException: ours carry one; Hono's own (and third parties') have a message. */
export function errorBodyOf(err: HTTPException): ErrorBody {
  return err instanceof ErrorBodyException ? err.body : { error: err.message };
}

/** Headers an HTTPException of ours asks for (e.g. `retry-after`). */
export function errorHeadersOf(err: HTTPException): Record<string, string> | undefined {
  return err instanceof ErrorBodyException ? err.headers : undefined;
}

/** The response of a failure: onError's, the 404's, and the object's fetch's (which is no Hono app). */
export function errorResponse(status: ContentfulStatusCode, body: ErrorBody, headers?: Record<string, string>): Response {
  return Response.json(body, { status, ...(headers ? { headers } : {}) });
}
