/**
 * A max-priority queue that pops equal-priority items in exactly the order libstdc++'s
 * `std::priority_queue` does (same push_heap / pop_heap / __adjust_heap steps).
 *
 * Why not any heap: llama.cpp's SPM and BPE merge loops can hold several queued bigrams
 * that compare equal (stale ones included); which one pops first is decided by the heap
 * layout, so matching llama.cpp token for token means matching the heap algorithm too.
 */
export class StdPriorityQueue<T> {
  readonly #c: T[] = [];
  /** `less(a, b)` true when a has lower priority than b (the std comparator). */
  constructor(private readonly less: (a: T, b: T) => boolean) {}

  /** Number of queued items. */
  get size(): number {
    return this.#c.length;
  }

  /** std::priority_queue::push. */
  push(value: T): void {
    const c = this.#c;
    c.push(value);
    this.#pushHeap(c.length - 1, 0, value);
  }

  /** top() then pop(); undefined when empty. */
  pop(): T | undefined {
    const c = this.#c;
    const len = c.length;
    if (len === 0) return undefined;
    const top = c[0];
    if (len > 1) {
      // __pop_heap(first, last-1, last-1): move the last item out, the top into its slot,
      // then sift the hole down over the remaining len-1 items.
      const value = c[len - 1];
      c[len - 1] = c[0];
      this.#adjustHeap(0, len - 1, value);
    }
    c.pop();
    return top;
  }

  #pushHeap(holeIndex: number, topIndex: number, value: T): void {
    const c = this.#c;
    let parent = (holeIndex - 1) >> 1;
    while (holeIndex > topIndex && this.less(c[parent], value)) {
      c[holeIndex] = c[parent];
      holeIndex = parent;
      parent = (holeIndex - 1) >> 1;
    }
    c[holeIndex] = value;
  }

  #adjustHeap(holeIndex: number, len: number, value: T): void {
    const c = this.#c;
    const topIndex = holeIndex;
    let secondChild = holeIndex;
    while (secondChild < ((len - 1) >> 1)) {
      secondChild = 2 * (secondChild + 1);
      if (this.less(c[secondChild], c[secondChild - 1])) secondChild--;
      c[holeIndex] = c[secondChild];
      holeIndex = secondChild;
    }
    if ((len & 1) === 0 && secondChild === ((len - 2) >> 1)) {
      secondChild = 2 * (secondChild + 1);
      c[holeIndex] = c[secondChild - 1];
      holeIndex = secondChild - 1;
    }
    this.#pushHeap(holeIndex, topIndex, value);
  }
}
