// RFC 9162 hashes and proofs in the browser (WebCrypto SHA-256), the same as
// services/audit/dmp_audit/merkle.py: leaf and node hashes, the root an inclusion proof leads
// to, and whether a consistency proof holds. Sizes are below 2^53: plain arithmetic, no 32-bit
// shifts. No I/O here.

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const sha256 = async (...parts) =>
  new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
export const unhex = (text) => Uint8Array.from(text.match(/../g) ?? [], (b) => parseInt(b, 16));

// null when the text is not base64
export function unbase64(text) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

export const leafHash = (bytes) => sha256(Uint8Array.of(0), bytes);
const nodeHash = (left, right) => sha256(Uint8Array.of(1), left, right);
const half = (n) => Math.floor(n / 2);
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// Up from a left child on the right edge: while fn is even (and not 0), both halve.
function rise(fn, sn) {
  while (fn % 2 === 0 && fn !== 0) [fn, sn] = [half(fn), half(sn)];
  return [fn, sn];
}

// RFC 9162 §2.1.3.2: the root the inclusion proof of leaf `index` leads to, or null.
export async function rootFromInclusion(index, size, leaf, proof) {
  if (index >= size) return null;
  let [fn, sn, r] = [index, size - 1, leaf];
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      [fn, sn] = rise(fn, sn);
    } else {
      r = await nodeHash(r, p);
    }
    [fn, sn] = [half(fn), half(sn)];
  }
  return sn === 0 ? r : null;
}

function powerOfTwo(n) {
  while (n % 2 === 0) n /= 2;
  return n === 1;
}

// RFC 9162 §2.1.4.2: does the tree of size `second` extend the one of size `first`?
export async function consistent(first, second, firstRoot, secondRoot, proof) {
  if (!(first > 0 && first <= second)) return false;
  if (first === second) return proof.length === 0 && same(firstRoot, secondRoot);
  const path = powerOfTwo(first) ? [firstRoot, ...proof] : [...proof];
  if (!path.length) return false;
  let [fn, sn] = [first - 1, second - 1];
  while (fn % 2 === 1) [fn, sn] = [half(fn), half(sn)];
  let [fr, sr] = [path[0], path[0]];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      [fr, sr] = [await nodeHash(c, fr), await nodeHash(c, sr)];
      [fn, sn] = rise(fn, sn);
    } else {
      sr = await nodeHash(sr, c);
    }
    [fn, sn] = [half(fn), half(sn)];
  }
  return sn === 0 && same(fr, firstRoot) && same(sr, secondRoot);
}
