/** Edited copies of GGUF files, for tests of what a loader refuses or reads differently. */
import { openGGUF } from "../../model/gguf/mod.ts";
import { type GGUFTensorInput, writeGGUF } from "../../model/gguf/writer.ts";
import type { GGUFMetadataEntry } from "../../model/gguf/types.ts";

/** How to edit a file: its metadata entries and its tensors (each with its bytes). */
export interface GGUFEdit {
  metadata?: (entries: GGUFMetadataEntry[]) => GGUFMetadataEntry[];
  tensors?: (tensors: GGUFTensorInput[]) => GGUFTensorInput[];
}

/** A temporary copy of GGUF `src` with `edit` applied; returns its path (the caller removes it). */
export async function editedGGUF(src: string, edit: GGUFEdit): Promise<string> {
  const f = await openGGUF(src);
  try {
    const tensors: GGUFTensorInput[] = [];
    for (const t of f.tensors) {
      tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await f.readTensor(t) });
    }
    const metadata = edit.metadata?.(f.metadata.entries()) ?? f.metadata.entries();
    const path = await Deno.makeTempFile({ suffix: ".gguf" });
    await Deno.writeFile(
      path,
      writeGGUF({ metadata, tensors: edit.tensors?.(tensors) ?? tensors }),
    );
    return path;
  } finally {
    f.close();
  }
}
