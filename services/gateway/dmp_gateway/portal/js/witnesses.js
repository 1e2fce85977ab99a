// The witnesses' word on the audit log, checked in the browser (docs/audit.md): a checkpoint
// note (c2sp.org/tlog-checkpoint) signed by the log, the witnesses' cosignatures of it
// (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1). WebCrypto only: no I/O here.

import { concat, hex, sha256, unbase64 } from "./merkle.js";

const encoder = new TextEncoder();
const DASH = "\u2014";
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// { text (bytes), origin, size, root (bytes), lines: [{ name, blob }] }, or null if the note is
// not a checkpoint with a signature block.
export function parseNote(note) {
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0 || !note.endsWith("\n")) return null;
  const text = note.slice(0, cut + 1);
  const [origin, size, root, ...rest] = text.split("\n");
  const rootHash = unbase64(root ?? "");
  if (!origin || !/^(0|[1-9][0-9]{0,15})$/.test(size ?? "") || rootHash?.length !== 32) return null;
  if (rest.slice(0, -1).includes("")) return null;
  const lines = [];
  for (const line of note.slice(cut + 2, -1).split("\n")) {
    const [dash, name, encoded, extra] = line.split(" ");
    const blob = unbase64(encoded ?? "");
    if (dash !== DASH || !name || !blob || blob.length < 5 || extra !== undefined) return null;
    lines.push({ name, blob });
  }
  return { text: encoder.encode(text), origin, size: Number(size), root: rootHash, lines };
}

// A published verifier key <name>+<hex key id>+<base64(type ‖ key)> of the given type byte
// (0x01: the log's note key; 0x04: a witness's cosignature/v1 key), checked against its id.
async function keyOf(vkey, type) {
  const [name, id, ...material] = vkey.split("+");
  const raw = unbase64(material.join("+"));
  if (!name || !raw || raw.length !== 33 || raw[0] !== type) return null;
  const expected = (await sha256(encoder.encode(`${name}\n`), raw)).slice(0, 4);
  if (hex(expected) !== id) return null;
  const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
  return { name, id: expected, key };
}

const verify = (key, signature, message) => crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);

// Whether the log's key (its verifier_key) signed the note's text.
export async function signedByLog(parsed, logVerifierKey) {
  const log = await keyOf(logVerifierKey, 0x01);
  if (!log || log.name !== parsed.origin) return false;
  for (const { name, blob } of parsed.lines) {
    if (name === log.name && same(blob.slice(0, 4), log.id) && blob.length === 68) {
      if (await verify(log.key, blob.slice(4), parsed.text)) return true;
    }
  }
  return false;
}

function timestampOf(bytes) {
  let t = 0n;
  for (const b of bytes) t = (t << 8n) | BigInt(b);
  return t;
}

// For each witness key ({ name, verifier_key }): "ok" if one of its lines verifies, "bad" if it
// has a line that does not, "absent" if it has none. Lines by other keys are ignored.
export async function cosignatures(parsed, witnesses) {
  const verdicts = new Map();
  for (const witness of witnesses) {
    const key = await keyOf(witness.verifier_key, 0x04);
    let verdict = key ? "absent" : "bad";
    for (const { name, blob } of key ? parsed.lines : []) {
      if (name !== key.name || !same(blob.slice(0, 4), key.id)) continue;
      const time = timestampOf(blob.slice(4, 12));
      const message = concat(encoder.encode(`cosignature/v1\ntime ${time}\n`), parsed.text);
      const holds = blob.length === 76 && time < 2n ** 63n && (await verify(key.key, blob.slice(12), message));
      verdict = holds ? "ok" : verdict === "ok" ? "ok" : "bad";
    }
    verdicts.set(witness.name, verdict);
  }
  return verdicts;
}
