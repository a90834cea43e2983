package raft_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestREADME_EmbeddingExampleIsExampleSource keeps README.md's embedding example and
// example_embed_test.go, which Example runs, the same code, so the README cannot rot.
func TestREADME_EmbeddingExampleIsExampleSource(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## Embedding\n\n```go\n")
	if !ok {
		t.Fatal("README.md has no ```go block right under ## Embedding")
	}
	block, _, ok := strings.Cut(after, "```\n")
	if !ok {
		t.Fatal("README.md's embedding block does not end")
	}
	src, err := os.ReadFile("example_embed_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(src), "\n\nimport (")
	if !ok {
		t.Fatal("example_embed_test.go has no import block after its header")
	}
	if code = "import (" + code; code != block {
		t.Fatalf("README.md's embedding example differs from example_embed_test.go; copy the file's code from its import block on into the README.\n%s", firstDifference(block, code))
	}
}

// firstDifference describes the first line where a and b differ.
func firstDifference(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + " of the block:\nREADME:  " + x + "\nexample: " + y
		}
	}
	return "(they differ only in trailing lines)"
}
