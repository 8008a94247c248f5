/**
 * Tokens and text at the head: the most bytes a token covers (a prompt's size is bounded by it
 * before it is tokenized), and the decoder that lets tool-call markers held as control tokens
 * come out as text.
 *
 * @module
 */
import type { StreamDecoder, Tokenizer } from "../../model/tokenizer/mod.ts";

/**
 * The output decoder while tools are offered: the format's call `markers` that the vocabulary
 * holds as control tokens (Mistral's `[TOOL_CALLS]`, Llama's `<|python_tag|>`), which decoding
 * drops like every control token, come out as their text, so the API can find calls by them.
 */
export function markerDecoder(
  tokenizer: Pick<Tokenizer, "createDecoder" | "tokenId" | "isControl" | "tokenText">,
  markers: readonly string[],
): StreamDecoder {
  const ids = new Set<number>();
  for (const text of markers) {
    const id = tokenizer.tokenId(text);
    if (id !== undefined && tokenizer.isControl(id)) ids.add(id);
  }
  const decoder = tokenizer.createDecoder();
  if (ids.size === 0) return decoder;
  return {
    push: (id) => ids.has(id) ? decoder.flush() + tokenizer.tokenText(id) : decoder.push(id),
    flush: () => decoder.flush(),
  };
}

/** A vocabulary's longest piece, bytes, by tokenizer (read once: a pass over the vocabulary). */
const longestPieces = new WeakMap<Tokenizer, number>();

/**
 * The most bytes of text one token of `tokenizer` covers: its longest piece (the bytes it stands
 * for: SPM's "▁" a space, byte-level BPE's characters one byte each, a control token its text),
 * and at least one character's 4 (an unknown character is one token).
 */
export function longestPieceBytes(tokenizer: Tokenizer): number {
  let longest = longestPieces.get(tokenizer);
  if (longest === undefined) {
    longest = 4;
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      longest = Math.max(longest, tokenizer.tokenPiece(id).length);
    }
    longestPieces.set(tokenizer, longest);
  }
  return longest;
}

/** UTF-8 length of `text` as the tokenizer sees it (a lone surrogate is U+FFFD, 3 bytes). */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
