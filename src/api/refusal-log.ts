/** One refused request, as its log line names it. */
export interface Refusal {
  method: string | undefined;
  route: string;
  status: number;
  userId?: string;
}

/** Where the counted repeats go: one line per kind of refusal per window (no kind: those past the limit of kinds). */
export type RepeatsWriter = (fields: Partial<Refusal> & { repeats: number; windowMs: number }) => void;

/**
 * Refusals a flood repeats are counted, not written one by one (docs/decisions.md, "Bounded under hostile clients"). A
 * 429 is by nature one of many, and a line for each would let a client write the log at its own rate: `npm run abuse`'s
 * hostile clients drew some 36,000 refusals a minute. The first refusal of a kind (status, method, route and user) in a
 * window is written as usual; the window's further ones are counted and written as one line per kind when the window
 * ends. A window opens with the first refusal after a quiet one. At most `maxKinds` kinds are held at once; refusals of
 * kinds past that are counted under one line of their own.
 */
export class RefusalLog {
  private readonly kinds = new Map<string, { refusal: Refusal; repeats: number }>();
  private overflow = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly writeRepeats: RepeatsWriter,
    private readonly options: { windowMs: number; maxKinds: number } = { windowMs: 10_000, maxKinds: 1_000 },
  ) {}

  /** Whether this refusal's own line is to be written: the first of its kind in the window. Otherwise it is counted. */
  admit(refusal: Refusal): boolean {
    const key = `${refusal.status} ${refusal.method ?? ''} ${refusal.route} ${refusal.userId ?? ''}`;
    const kind = this.kinds.get(key);
    this.openWindow();
    if (kind) {
      kind.repeats += 1;
      return false;
    }
    if (this.kinds.size >= this.options.maxKinds) {
      this.overflow += 1;
      return false;
    }
    this.kinds.set(key, { refusal, repeats: 0 });
    return true;
  }

  /** Writes the counted repeats and closes the window (at its end, and when the API stops). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const { windowMs } = this.options;
    for (const { refusal, repeats } of this.kinds.values()) if (repeats > 0) this.writeRepeats({ ...refusal, repeats, windowMs });
    if (this.overflow > 0) this.writeRepeats({ repeats: this.overflow, windowMs });
    this.kinds.clear();
    this.overflow = 0;
  }

  private openWindow(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.options.windowMs);
    this.timer.unref();
  }
}
