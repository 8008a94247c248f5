/** `llmctl model inspect <file>`: metadata and tensor table of a GGUF file, reading only its index. */
import { Command } from "@commander-js/extra-typings";
import { typeName } from "../../kernels/quant/types.ts";
import { openModelFile } from "../../model/engine.ts";
import { type GGUFArray, type GGUFValue, GGUFValueType } from "../../model/gguf/mod.ts";
import { printJson } from "../common.ts";
import { formatBytes, table } from "../format.ts";

/** Arrays longer than this are summarized rather than printed whole. */
const ARRAY_PREVIEW = 8;

/** Build the `model` command group (alias `models`). */
export function modelCommand() {
  const cmd = new Command("model").alias("models").description("inspect model files");
  cmd.command("inspect")
    .description("print a GGUF file's metadata and tensor table (reads only the header and index)")
    .argument("<file>", "GGUF model file")
    .option("--json", "print one JSON object")
    .option("--full", "print arrays whole instead of a preview")
    .action(async (path, opts) => {
      const file = await openModelFile(path);
      try {
        const metadata: Record<string, unknown> = {};
        for (const e of file.metadata.entries()) {
          metadata[e.key] = toJson(e.value, opts.full ?? false);
        }
        const tensors = file.tensors.map((t) => ({
          name: t.name,
          type: typeName(t.type),
          shape: [...t.dims],
          bytes: t.nBytes ?? null,
          offset: t.offset,
        }));
        const totalBytes = file.tensors.reduce((s, t) => s + (t.nBytes ?? 0), 0);
        if (opts.json) {
          printJson({
            path,
            version: file.version,
            alignment: file.alignment,
            data_offset: file.dataOffset,
            file_size: file.fileSize,
            tensor_bytes: totalBytes,
            metadata,
            tensors,
            bytes_read: file.bytesRead,
          });
          return;
        }
        console.log(
          `${path}: GGUF v${file.version}, ${formatBytes(file.fileSize)}, ` +
            `${tensors.length} tensors (${formatBytes(totalBytes)}), data at ${file.dataOffset}`,
        );
        console.log("\nmetadata:");
        console.log(table(
          ["key", "value"],
          Object.entries(metadata).map((
            [k, v],
          ) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
        ));
        console.log("\ntensors:");
        console.log(table(
          ["name", "type", "shape", "bytes"],
          tensors.map((
            t,
          ) => [
            t.name,
            t.type,
            t.shape.join(" × "),
            t.bytes === null ? "?" : formatBytes(t.bytes),
          ]),
        ));
      } finally {
        file.close();
      }
    });
  return cmd;
}

function toJson(v: GGUFValue, full: boolean): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (typeof v !== "object") return v;
  const arr = v as GGUFArray;
  const values = Array.from(arr.values as ArrayLike<GGUFValue>);
  if (full || values.length <= ARRAY_PREVIEW) return values.map((x) => toJson(x, full));
  return {
    array: GGUFValueType[arr.itemType].toLowerCase(),
    length: values.length,
    head: values.slice(0, ARRAY_PREVIEW).map((x) => toJson(x, full)),
  };
}
