/**
 * A binary min-heap whose items remember their own position (through `pos`), so an item can be
 * removed or re-keyed in O(log n) without lazy deletion. Ties must be broken by the comparator:
 * every heap in the dispatcher orders totally, so any heap holding the same items peeks the same
 * top — which is what makes a state rebuilt from a snapshot decide like the original.
 */
export class IndexedHeap<T> {
  private readonly items: T[] = [];

  constructor(
    private readonly less: (a: T, b: T) => boolean,
    private readonly getPos: (item: T) => number,
    private readonly setPos: (item: T, pos: number) => void,
  ) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  has(item: T): boolean {
    const p = this.getPos(item);
    return p >= 0 && p < this.items.length && this.items[p] === item;
  }

  push(item: T): void {
    this.items.push(item);
    this.setPos(item, this.items.length - 1);
    this.up(this.items.length - 1);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top !== undefined) this.remove(top);
    return top;
  }

  remove(item: T): boolean {
    if (!this.has(item)) return false;
    const p = this.getPos(item);
    const last = this.items.pop() as T;
    this.setPos(item, -1);
    if (p < this.items.length) {
      this.items[p] = last;
      this.setPos(last, p);
      this.update(last);
    }
    return true;
  }

  /** Restore order after `item`'s key changed. */
  update(item: T): void {
    const p = this.getPos(item);
    if (!this.up(p)) this.down(p);
  }

  /** Items in heap order (not sorted); for iteration that does not care about order. */
  values(): readonly T[] {
    return this.items;
  }

  private up(i: number): boolean {
    const items = this.items;
    const x = items[i];
    let moved = false;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(x, items[parent])) break;
      items[i] = items[parent];
      this.setPos(items[i], i);
      i = parent;
      moved = true;
    }
    items[i] = x;
    this.setPos(x, i);
    return moved;
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    const x = items[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.less(items[r], items[l]) ? r : l;
      if (!this.less(items[c], x)) break;
      items[i] = items[c];
      this.setPos(items[i], i);
      i = c;
    }
    items[i] = x;
    this.setPos(x, i);
  }
}
