/**
 * Startable is anything that opens a socket, timer or file descriptor. `start()` and `stop()` are
 * idempotent; `stop()` releases everything `start()` opened. A component must not assume any
 * other component has been started.
 */
export interface Startable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * startAll starts components in order; if one fails, those already started are stopped in
 * reverse order and the error is rethrown.
 */
export async function startAll(components: readonly Startable[]): Promise<void> {
  const started: Startable[] = [];
  try {
    for (const c of components) {
      await c.start();
      started.push(c);
    }
  } catch (err) {
    await stopAll(started);
    throw err;
  }
}

/** stopAll stops components in reverse order; it never throws and returns the errors it saw. */
export async function stopAll(components: readonly Startable[]): Promise<unknown[]> {
  const errors: unknown[] = [];
  for (const c of [...components].reverse()) {
    try {
      await c.stop();
    } catch (err) {
      errors.push(err);
    }
  }
  return errors;
}
