import { canonical, redecideRun, type Divergence } from '../../domain/dispatcher.js';
import { isInputFact, type DispatchEvent } from '../../domain/events.js';
import { initialState } from '../../domain/state.js';
import type { EventLog } from '../../runtime/eventLog.js';

export interface VerifyResult {
  events: number;
  commands: number;
  divergence?: Divergence;
}

/**
 * Re-decide every recorded input from the start of the stream: rebuild each command from the
 * events it produced, run it through the dispatcher, and compare. Stops at the first difference.
 */
export async function verifyStream(log: EventLog, stream: string): Promise<VerifyResult> {
  const s = initialState();
  let run: DispatchEvent[] = [];
  let runVersion = 0;
  let events = 0;
  let commands = 0;
  const check = (): Divergence | undefined => {
    commands++;
    const d = redecideRun(s, run, runVersion);
    run = [];
    return d;
  };
  for await (const se of log.read(stream, 0)) {
    const e = se.event;
    if (run.length > 0 && (isInputFact(e) || e.at !== run[run.length - 1].at)) {
      const d = check();
      if (d) return { events, commands, divergence: d };
    }
    if (run.length === 0) runVersion = se.version;
    run.push(e);
    events++;
  }
  if (run.length > 0) {
    const d = check();
    if (d) return { events, commands, divergence: d };
  }
  return { events, commands };
}

/** Human-readable report of a divergence: the command and the first differing event. */
export function describeDivergence(d: Divergence): string {
  const lines = [`first difference in the events from version ${d.index}, re-deciding ${d.command.type} at ${new Date(d.command.at).toISOString()}`];
  if (d.error) lines.push(`  re-deciding threw: ${d.error}`);
  const n = Math.max(d.recorded.length, d.redecided.length);
  for (let i = 0; i < n; i++) {
    const a = d.recorded[i] === undefined ? '(none)' : canonical(d.recorded[i]);
    const b = d.redecided[i] === undefined ? '(none)' : canonical(d.redecided[i]);
    if (a !== b) {
      lines.push(`  event ${i} recorded:   ${a}`, `  event ${i} re-decided: ${b}`);
      break;
    }
  }
  return lines.join('\n');
}
