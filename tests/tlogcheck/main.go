// Command tlogcheck verifies the DMP audit log from outside, with Go's own transparency-log
// code only (golang.org/x/mod/sumdb/note and sumdb/tlog): the checkpoint's signature, the hash
// tiles against the signed root, the inclusion of entries and the consistency of checkpoints.
//
//	tlogcheck -url http://127.0.0.1:8000 -key 'dmp.localhost/v1/audit/log+…' \
//	    [-samples 16] [-leaf 0 -leaf 41] [-previous old.checkpoint] [-save new.checkpoint] \
//	    [-witness 'witness.example/w1+…']
//
// With -witness (repeatable), the newest checkpoint the log says was witnessed must carry a
// cosignature by each of those witnesses (c2sp.org/tlog-cosignature, cosignature/v1: a
// note.Verifier of our own, as sumdb/note knows only plain Ed25519 keys) and be a prefix of
// the newest tree.
//
// It exits 0 when every check holds and 1 at the first that does not.
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8 // c2sp.org/tlog-tiles

type leafList []int64

func (l *leafList) String() string { return fmt.Sprint(*l) }
func (l *leafList) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil && n < 0 {
		err = errors.New("a leaf index is not negative")
	}
	*l = append(*l, n)
	return err
}

type keyList []string

func (l *keyList) String() string     { return fmt.Sprint(*l) }
func (l *keyList) Set(s string) error { *l = append(*l, s); return nil }

// cosignatureV1 verifies a witness's cosignature line: key hash from the 0x04 key type, and a
// signature (after the key hash) of an 8-byte timestamp then Ed25519 over
// "cosignature/v1\ntime <t>\n" followed by the note's text.
type cosignatureV1 struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v cosignatureV1) Name() string    { return v.name }
func (v cosignatureV1) KeyHash() uint32 { return v.hash }
func (v cosignatureV1) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t > math.MaxInt64 {
		return false
	}
	signed := append(fmt.Appendf(nil, "cosignature/v1\ntime %d\n", t), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

func newCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hashHex, keyB64, ok2 := strings.Cut(rest, "+")
	hash, err1 := strconv.ParseUint(hashHex, 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(keyB64)
	if !ok1 || !ok2 || name == "" || len(hashHex) != 8 || err1 != nil || err2 != nil ||
		len(key) != 1+ed25519.PublicKeySize || key[0] != 0x04 {
		return nil, fmt.Errorf("not a cosignature/v1 verifier key: %q", vkey)
	}
	sum := sha256.Sum256(append([]byte(name+"\n"), key...))
	if binary.BigEndian.Uint32(sum[:4]) != uint32(hash) {
		return nil, fmt.Errorf("the key hash of %q does not match its key", name)
	}
	return cosignatureV1{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}

// checkWitnessed reads the newest witnessed checkpoint: signed by the log, cosigned by every
// witness given, and a prefix of the newest tree.
func checkWitnessed(c *client, tree tlog.Tree, hr tlog.HashReader, log note.Verifier, vkeys []string) (string, error) {
	verifiers := []note.Verifier{log}
	for _, vkey := range vkeys {
		v, err := newCosignatureVerifier(vkey)
		if err != nil {
			return "", fmt.Errorf("-witness: %w", err)
		}
		verifiers = append(verifiers, v)
	}
	msg, err := c.get("/v1/audit/log/checkpoint?witnessed=true")
	if err != nil {
		return "", err
	}
	witnessed, n, err := openCheckpoint(msg, log, verifiers[1:]...)
	if err != nil {
		return "", fmt.Errorf("witnessed %w", err)
	}
	names := []string{}
	for _, v := range verifiers[1:] {
		found := false
		for _, sig := range n.Sigs {
			found = found || (sig.Name == v.Name() && sig.Hash == v.KeyHash())
		}
		if !found {
			return "", fmt.Errorf("witnessed checkpoint (%d): no cosignature by %s", witnessed.N, v.Name())
		}
		names = append(names, v.Name())
	}
	if err := checkConsistency(c, tree, hr, witnessed); err != nil {
		return "", err
	}
	return fmt.Sprintf(", the checkpoint of %d cosigned by %s", witnessed.N, strings.Join(names, ", ")), nil
}

type client struct {
	base string
	http *http.Client
}

func (c *client) get(path string) ([]byte, error) {
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

func (c *client) getJSON(path string, into any) error {
	body, err := c.get(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, into)
}

// tiles reads hash tiles over HTTP at the C2SP paths (Go names them with their height:
// tile/8/L/N; C2SP fixes the height at 8 and leaves it out).
type tiles struct{ c *client }

func (t tiles) Height() int { return tileHeight }

func (t tiles) ReadTiles(want []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(want))
	for i, tile := range want {
		path := "/v1/audit/log/tile/" + strings.TrimPrefix(tile.Path(), fmt.Sprintf("tile/%d/", tileHeight))
		body, err := t.c.get(path)
		if err != nil {
			return nil, err
		}
		if len(body) != tile.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, not %d", path, len(body), tile.W*tlog.HashSize)
		}
		data[i] = body
	}
	return data, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// openCheckpoint verifies the note's signature by the log's key and reads its three lines.
// Signatures by other keys (the witnesses') are ignored, as the signed-note format requires.
func openCheckpoint(msg []byte, log note.Verifier, witnesses ...note.Verifier) (tlog.Tree, *note.Note, error) {
	origin := log.Name()
	n, err := note.Open(msg, note.VerifierList(append([]note.Verifier{log}, witnesses...)...))
	if err != nil {
		return tlog.Tree{}, nil, fmt.Errorf("checkpoint signature: %w", err)
	}
	logSigned := false
	for _, sig := range n.Sigs {
		logSigned = logSigned || (sig.Name == origin && sig.Hash == log.KeyHash())
	}
	if !logSigned {
		return tlog.Tree{}, nil, errors.New("checkpoint signature: none by the log's key")
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != origin {
		return tlog.Tree{}, nil, fmt.Errorf("checkpoint: not a checkpoint of origin %q", origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return tlog.Tree{}, nil, fmt.Errorf("checkpoint: bad tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, nil, fmt.Errorf("checkpoint: bad root hash %q", lines[2])
	}
	var hash tlog.Hash
	copy(hash[:], root)
	return tlog.Tree{N: size, Hash: hash}, n, nil
}

func hexHashes(in []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(in))
	for i, s := range in {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("not a hex hash: %q", s)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

func sameHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkLeaf proves the entry's leaf hash (as the JSON proof route gives it) is in the tree,
// with a proof Go computes from the tiles; the route's own RFC 9162 proof must be the same.
func checkLeaf(c *client, tree tlog.Tree, hr tlog.HashReader, index int64) error {
	var answer struct {
		LeafHash string   `json:"leaf_hash"`
		Proof    []string `json:"proof"`
	}
	if err := c.getJSON(fmt.Sprintf("/v1/audit/entries/%d/proof?tree_size=%d", index, tree.N), &answer); err != nil {
		return err
	}
	leaf, err := hexHashes([]string{answer.LeafHash})
	if err != nil {
		return err
	}
	proof, err := tlog.ProveRecord(tree.N, index, hr)
	if err != nil {
		return fmt.Errorf("leaf %d: proof from the tiles: %w", index, err)
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, leaf[0]); err != nil {
		return fmt.Errorf("leaf %d: not in the signed tree: %w", index, err)
	}
	served, err := hexHashes(answer.Proof)
	if err != nil || !sameHashes(served, proof) {
		return fmt.Errorf("leaf %d: the proof route's proof differs from the tiles'", index)
	}
	return nil
}

// checkConsistency proves the tree of `old` is a prefix of `tree`, with a proof Go computes
// from the tiles; the JSON consistency route's proof must be the same.
func checkConsistency(c *client, tree tlog.Tree, hr tlog.HashReader, old tlog.Tree) error {
	if old.N > tree.N {
		return fmt.Errorf("the log shrank from %d to %d entries", old.N, tree.N)
	}
	if old.N == 0 {
		return nil
	}
	proof, err := tlog.ProveTree(tree.N, old.N, hr)
	if err != nil {
		return fmt.Errorf("consistency %d→%d: proof from the tiles: %w", old.N, tree.N, err)
	}
	if err := tlog.CheckTree(proof, tree.N, tree.Hash, old.N, old.Hash); err != nil {
		return fmt.Errorf("consistency %d→%d: the trees differ: %w", old.N, tree.N, err)
	}
	if old.N == tree.N {
		return nil
	}
	var answer struct {
		Proof []string `json:"proof"`
	}
	if err := c.getJSON(fmt.Sprintf("/v1/audit/consistency?from=%d&to=%d", old.N, tree.N), &answer); err != nil {
		return err
	}
	served, err := hexHashes(answer.Proof)
	if err != nil || !sameHashes(served, proof) {
		return fmt.Errorf("consistency %d→%d: the route's proof differs from the tiles'", old.N, tree.N)
	}
	return nil
}

func run() error {
	var leaves leafList
	base := flag.String("url", "", "the gateway's base URL")
	vkey := flag.String("key", "", "the log's verifier key (GET /v1/audit/keys: verifier_key)")
	samples := flag.Int("samples", 16, "random leaves and earlier tree sizes to check")
	previous := flag.String("previous", "", "a checkpoint saved earlier: the log must extend it")
	save := flag.String("save", "", "where to save the verified checkpoint")
	flag.Var(&leaves, "leaf", "a leaf index to check as well (repeatable)")
	var witnesses keyList
	flag.Var(&witnesses, "witness", "a witness's verifier key: the witnessed checkpoint must carry its cosignature (repeatable)")
	flag.Parse()
	if *base == "" || *vkey == "" {
		return errors.New("-url and -key are required")
	}
	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		return fmt.Errorf("-key: %w", err)
	}
	c := &client{base: strings.TrimSuffix(*base, "/"), http: &http.Client{Timeout: 30 * time.Second}}

	msg, err := c.get("/v1/audit/log/checkpoint")
	if err != nil {
		return err
	}
	tree, _, err := openCheckpoint(msg, verifier)
	if err != nil {
		return err
	}
	if tree.N == 0 {
		return errors.New("the log is empty: nothing to check")
	}
	hr := tlog.TileHashReader(tree, tiles{c})
	// Reading any hash through the tiles checks the tiles against the signed root first.
	root, err := tlog.TreeHash(tree.N, hr)
	if err != nil {
		return fmt.Errorf("tiles: %w", err)
	}
	if root != tree.Hash {
		return errors.New("tiles: they hash to another root than the checkpoint's")
	}

	for range *samples {
		leaves = append(leaves, rand.Int64N(tree.N))
	}
	for _, index := range leaves {
		if index >= tree.N {
			return fmt.Errorf("leaf %d: beyond the tree of %d entries", index, tree.N)
		}
		if err := checkLeaf(c, tree, hr, index); err != nil {
			return err
		}
	}
	for range *samples {
		size := 1 + rand.Int64N(tree.N)
		hash, err := tlog.TreeHash(size, hr)
		if err != nil {
			return fmt.Errorf("tree of %d: %w", size, err)
		}
		if err := checkConsistency(c, tree, hr, tlog.Tree{N: size, Hash: hash}); err != nil {
			return err
		}
	}
	checked := fmt.Sprintf("%d leaves, %d earlier sizes", len(leaves), *samples)
	if *previous != "" {
		saved, err := os.ReadFile(*previous)
		if err != nil {
			return err
		}
		old, _, err := openCheckpoint(saved, verifier)
		if err != nil {
			return fmt.Errorf("previous %w", err)
		}
		if err := checkConsistency(c, tree, hr, old); err != nil {
			return err
		}
		checked += fmt.Sprintf(", consistent with the previous checkpoint (%d)", old.N)
	}
	if len(witnesses) > 0 {
		cosigned, err := checkWitnessed(c, tree, hr, verifier, witnesses)
		if err != nil {
			return err
		}
		checked += cosigned
	}
	if *save != "" {
		if err := os.WriteFile(*save, msg, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("OK %s: %d entries, root %s; %s\n", verifier.Name(), tree.N, tree.Hash, checked)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
		os.Exit(1)
	}
}
