export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __videogenStop?: () => Promise<void> }).__videogenStop?.();
}
