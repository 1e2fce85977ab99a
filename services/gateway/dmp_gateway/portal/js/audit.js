// Checking a dossier's trace against the signed audit log, in the browser, from public routes
// only (docs/audit.md; the same checks as services/audit/dmp_audit/verifier.py):
// each entry's bytes hash to its leaf hash and say what the page shows; each entry is in the
// tree of the newest signed head (RFC 9162 inclusion proof); the head's Ed25519 signature holds
// under the published key its key_id names, within that key's validity period; the dossier's
// entries are chained with none missing; and the witnesses of /v1/audit/keys cosigned a
// checkpoint that the signed head extends (witnesses.js).

import { call, get } from "./api.js";
import { consistent, hex, leafHash, rootFromInclusion, sha256, unbase64, unhex } from "./merkle.js";
import { cosignatures, parseNote, signedByLog } from "./witnesses.js";

const encoder = new TextEncoder();

// A key signs only within its period (both bounds included). The head's timestamp and the
// bounds are written alike (six fractional digits and Z): as text, they compare as times.
const inPeriod = (key, at) =>
  (!key.not_before || key.not_before <= at) && (!key.not_after || at <= key.not_after);

async function signatureHolds(head, keys) {
  const message = encoder.encode(
    `dmp-audit-tree-head/v1\n${head.size}\n${head.root_hash}\n${head.timestamp}\n`,
  );
  for (const key of keys) {
    const raw = unbase64(key.public_key);
    if (key.key_id !== head.key_id || hex(await sha256(raw)).slice(0, 16) !== key.key_id) continue;
    if (!inPeriod(key, head.timestamp)) continue;
    const publicKey = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, [
      "verify",
    ]);
    if (await crypto.subtle.verify({ name: "Ed25519" }, publicKey, unbase64(head.signature), message)) {
      return true;
    }
  }
  return false;
}

// The witnesses' word: { known, vouched: [names], size (of the checkpoint they cosigned) },
// with what does not hold pushed to `problems` (in French).
async function checkWitnesses(head, keys, problems) {
  const witnesses = keys.filter((k) => k.role === "witness");
  // The log's keys, current and retired: the note names the one that signed it (its key hash).
  const logKeys = keys.filter((k) => k.role !== "witness" && k.verifier_key);
  const report = { known: witnesses.length, vouched: [], size: 0 };
  if (!witnesses.length || !logKeys.length) return report;
  let note;
  try {
    note = await (await call("GET", "/v1/audit/log/checkpoint?witnessed=true", undefined, { raw: true })).text();
  } catch (error) {
    if (error.status === 404) return report; // no witness has cosigned yet
    throw error;
  }
  const parsed = parseNote(note);
  let signed = false;
  for (const key of parsed ? logKeys : []) signed ||= await signedByLog(parsed, key.verifier_key);
  if (!signed) {
    problems.push("le point de contrôle contre-signé par les témoins n'est pas signé par le journal");
    return report;
  }
  const size = Number(head.size);
  const root = unhex(head.root_hash);
  const [first, second] = parsed.size <= size ? [parsed.size, size] : [size, parsed.size];
  const [firstRoot, secondRoot] = parsed.size <= size ? [parsed.root, root] : [root, parsed.root];
  const proof =
    first === second || first === 0 ? [] : (await get(`/v1/audit/consistency?from=${first}&to=${second}`)).proof.map(unhex);
  if (first > 0 && !(await consistent(first, second, firstRoot, secondRoot, proof))) {
    problems.push(`les témoins ont contre-signé un journal de ${parsed.size} entrées que celui-ci ne prolonge pas`);
    return report;
  }
  for (const [name, verdict] of await cosignatures(parsed, witnesses)) {
    if (verdict === "ok") report.vouched.push(name);
    if (verdict === "bad") problems.push(`la contre-signature du témoin ${name} ne correspond pas`);
  }
  report.size = parsed.size;
  return report;
}

const SHOWN = ["seq", "action", "mode", "outcome"];

// Returns { checked, pending, problems, size, witnesses, verdicts: Map(seq -> "ok" | "pending" |
// problem) }.
export async function verifyTrace(ins, entries, { wholeTrace = true } = {}) {
  const report = { checked: 0, pending: 0, problems: [], verdicts: new Map(), size: 0 };
  const head = await get("/v1/audit/checkpoint");
  const size = Number(head.size);
  report.size = size;
  const root = head.root_hash;
  const { keys } = await get("/v1/audit/keys");
  let signed = false;
  try {
    signed = await signatureHolds(head, keys);
  } catch (error) {
    console.info(`signature check: ${error.name}`);
    report.problems.push("signature impossible à vérifier dans ce navigateur");
  }
  if (!signed) report.problems.push("la signature du journal ne correspond pas");
  try {
    report.witnesses = await checkWitnesses(head, keys, report.problems);
  } catch (error) {
    console.info(`witnesses check: ${error.name}`);
    report.problems.push("contre-signatures des témoins impossibles à vérifier");
    report.witnesses = { known: 0, vouched: [], size: 0 };
  }
  const chain = new Map();
  // Entries whose bytes are withheld (they name a document this reader may not read yet):
  // their leaf hash is still proved in the signed tree and links the dossier's chain.
  const withheld = new Set();
  for (const shown of entries) {
    const fail = (why) => {
      report.problems.push(`entrée ${shown.seq} : ${why}`);
      report.verdicts.set(shown.seq, why);
    };
    let leaf;
    if (shown.withheld) {
      leaf = unhex(shown.leaf_hash);
      withheld.add(shown.leaf_hash);
    } else {
      const bytes = encoder.encode(shown.entry);
      leaf = await leafHash(bytes);
      const said = JSON.parse(shown.entry);
      if (hex(leaf) !== shown.leaf_hash) {
        fail("son contenu ne correspond pas à son empreinte");
        continue;
      }
      if (SHOWN.some((k) => said[k] !== shown[k]) || said.actor.id !== shown.actor.id) {
        fail("la page affiche autre chose que l'entrée signée");
        continue;
      }
      if (said.ins !== ins) {
        fail("l'entrée concerne un autre dossier");
        continue;
      }
      chain.set(said.n, { prev: said.prev, leaf: hex(leaf) });
    }
    if (shown.seq >= size) {
      report.pending += 1;
      report.verdicts.set(shown.seq, "pending");
      continue;
    }
    const proof = await get(`/v1/audit/entries/${shown.seq}/proof?tree_size=${size}`);
    const computed = await rootFromInclusion(shown.seq, size, leaf, proof.proof.map(unhex));
    if (proof.leaf_hash !== hex(leaf) || computed === null || hex(computed) !== root) {
      fail(`absente de l'arbre signé de ${size} entrées`);
      continue;
    }
    report.checked += 1;
    report.verdicts.set(shown.seq, "ok");
  }
  for (const [n, link] of chain) {
    const before = chain.get(n - 1);
    if (before && before.leaf !== link.prev) {
      report.problems.push(`la chaîne du dossier est rompue avant l'entrée n°${n}`);
    } else if (!before && n > 0 && wholeTrace && !withheld.has(link.prev)) {
      report.problems.push(`la chaîne du dossier est rompue : l'entrée n°${n - 1} manque`);
    }
  }
  return report;
}
