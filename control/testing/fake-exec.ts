/**
 * fakeChildProcess stands in for node:child_process in attach tests: execFile (callback form, with
 * the stdin some callers write an `ip -batch` script to, and the promisified form) runs commands
 * against a fake kernel instead of the machine. Use inside `vi.mock('node:child_process', ...)`:
 *
 *   vi.mock('node:child_process', async (importOriginal) => {
 *     const { fakeChildProcess } = await import('./testing/fake-exec.js');
 *     return fakeChildProcess(await importOriginal(), kernel);
 *   });
 */
import { promisify } from 'node:util';

/** FakeKernel runs one command; it throws an Error with `stderr` for a failing one. */
export interface FakeKernel {
  run(cmd: string, args: readonly string[], input?: string): { stdout: string };
}

export function fakeChildProcess<T extends object>(real: T, kernel: FakeKernel): T {
  const execFile = (cmd: string, args: string[], ...rest: unknown[]) => {
    const cb = rest.find((r) => typeof r === 'function') as (e: Error | null, out?: string, err?: string) => void;
    let input = '';
    const stdin = {
      end: (s?: string) => {
        input = s ?? '';
      },
    };
    // After the caller's synchronous stdin.end(script).
    queueMicrotask(() => {
      try {
        cb(null, kernel.run(cmd, args, input).stdout, '');
      } catch (err) {
        cb(err as Error, '', String((err as { stderr?: string }).stderr ?? ''));
      }
    });
    return { stdin };
  };
  (execFile as unknown as Record<symbol, unknown>)[promisify.custom] = async (cmd: string, args: string[]) => ({
    ...kernel.run(cmd, args),
    stderr: '',
  });
  return { ...real, execFile };
}
