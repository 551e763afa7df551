import { describe, expect, it } from 'vitest';
import { Dirty } from '../../src/access/dirty.ts';
import type { ResourceId } from '../../src/ids.ts';
import { resyncDelayMs, resyncOf } from '../../workers/account/resync.ts';

describe('resync after a failed push', () => {
  it('retries at once after the first failure, then 1 s doubling to 60 s', () => {
    expect([1, 2, 3, 4, 8, 100].map(resyncDelayMs)).toEqual([0, 1000, 2000, 4000, 60_000, 60_000]);
  });

  it('keeps the resources whose flows break or whose gateways must hear of new filters', () => {
    const dirty = new Dirty();
    dirty.breaking.add('b' as ResourceId);
    dirty.reshaped.add('r' as ResourceId);
    dirty.resources.add('x' as ResourceId);
    expect(resyncOf(dirty)).toEqual({ breaking: ['b'], reshaped: ['r'] });
  });
});
