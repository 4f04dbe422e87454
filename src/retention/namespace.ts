import type { Connection } from '@temporalio/client';
import { msToTs, optionalTsToMs } from '@temporalio/common';

const DAY_MS = 86_400_000;

/**
 * Sets how long the Temporal namespace keeps closed workflows (their histories and visibility rows) to `days`, unless
 * it already does. Returns the retention found before, in days.
 */
export async function applyNamespaceRetention(connection: Connection, namespace: string, days: number): Promise<{ before: number; updated: boolean }> {
  const described = await connection.workflowService.describeNamespace({ namespace });
  const before = (optionalTsToMs(described.config?.workflowExecutionRetentionTtl) ?? 0) / DAY_MS;
  if (before === days) return { before, updated: false };
  // Only the retention is set: the server keeps every field of the config this request leaves out.
  await connection.workflowService.updateNamespace({ namespace, config: { workflowExecutionRetentionTtl: msToTs(days * DAY_MS) } });
  return { before, updated: true };
}
