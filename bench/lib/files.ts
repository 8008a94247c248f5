/** File-system helpers the benches share. */

/** Whether `p` exists (a file or folder; any stat failure reads as absent). */
export async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}
