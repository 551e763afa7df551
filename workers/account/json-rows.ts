/**
 * Rows read in bulk as JSON built inside SQLite (workers/account/json-pages.ts): their shapes,
 * apart from the reader so that code outside the Worker (bench/) can use the cache codecs.
 */

/** A value of a row read by `jsonPages`: SQLite's JSON, blobs as lower-case hex text (json_array refuses blobs). */
export type JsonValue = string | number | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonRow = readonly JsonValue[];

export interface JsonTable {
  name: string;
  /** SQL expressions, one per value of a row's array; none may yield a BLOB (`hexText` turns a blob into text). */
  values: readonly string[];
  /** The primary key's columns in order, each with where its value sits in the row's array and whether it is a blob read by `hexText`. */
  key: readonly { column: string; at: number; blob: boolean }[];
}

/** A blob column as lower-case hex text (read back with `src/ids.ts` `uuidFromHex` for ids). */
export const hexText = (column: string): string => `lower(hex(${column}))`;
