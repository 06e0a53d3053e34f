package docs

import (
	"bufio"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkedDocs are the pages whose snippets and quoted messages are held to
// the code, relative to the module root.
var checkedDocs = []string{"README.md", "docs/cli.md", "docs/projections.md", "docs/fx.md", "docs/consumers.md", "docs/deciding.md", "docs/observability.md", "docs/deploying-fleetd.md"}

// messagePrefixes start the lines that a non-Go block quotes as
// canonlog's messages: the command's errors name the binary, app's
// errors name the package.
var messagePrefixes = []string{"canonlog: ", "fleetd: ", "app: "}

// block is a fenced code block of a Markdown page.
type block struct {
	lang  string   // the word after the opening fence: "go", "sh", "" …
	line  int      // the line number of the block's first line
	lines []string // the lines between the fences, as written
}

// fencedBlocks returns the fenced code blocks of a Markdown page, those
// indented under a list item included.
func fencedBlocks(t *testing.T, page, text string) []block {
	t.Helper()
	var (
		blocks []block
		cur    *block
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), line: n + 1}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
	}
	require.NoError(t, sc.Err())
	if cur != nil {
		t.Fatalf("%s:%d: this fence is never closed", page, cur.line-1)
	}
	return blocks
}

// normalize trims every line and drops the blank ones, so that a snippet
// matches its source whatever its indentation.
func normalize(lines []string) []string {
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// moduleRoot is the directory holding go.mod, two levels up.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the module root is two directories above internal/docs")
	return root
}

// goFiles returns the module's Go files by path relative to root, skipping
// testdata and this package: its own test inputs must not count as the
// source a snippet is an excerpt of.
func goFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) ||
				rel == filepath.Join("internal", "docs") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			files = append(files, rel)
		}
		return nil
	})
	require.NoError(t, err)
	return files
}

// containsRun reports whether want occurs as a contiguous run in have.
func containsRun(have, want []string) bool {
	if len(want) == 0 {
		return true
	}
	for i := 0; i+len(want) <= len(have); i++ {
		if slices.Equal(have[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// TestDocsGoSnippets: every ```go block of the checked pages is an excerpt
// of the module's Go source, lines trimmed and blank lines dropped. A
// snippet that is only written in the page can drift from the API
// unnoticed; one copied from an example test is compiled and run by go
// test.
func TestDocsGoSnippets(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	sources := map[string][]string{}
	for _, f := range goFiles(t, root) {
		b, err := os.ReadFile(filepath.Join(root, f))
		require.NoError(t, err)
		sources[f] = normalize(strings.Split(string(b), "\n"))
	}
	names := make([]string, 0, len(sources))
	for f := range sources {
		names = append(names, f)
	}
	slices.Sort(names)

	for _, page := range checkedDocs {
		text, err := os.ReadFile(filepath.Join(root, page))
		require.NoError(t, err)
		for _, b := range fencedBlocks(t, page, string(text)) {
			if b.lang != "go" {
				continue
			}
			want := normalize(b.lines)
			if slices.ContainsFunc(names, func(f string) bool { return containsRun(sources[f], want) }) {
				continue
			}
			t.Errorf("%s:%d: this go block is not an excerpt of any Go file of the module: put the snippet in an example test "+
				"(an Example function in the package it is about) and copy its lines verbatim into the page", page, b.line)
		}
	}
}

// quotedMessages returns the messages a page quotes as canonlog's output,
// with the line each is on: in a block other than Go, a line starting with
// one of messagePrefixes, and every line of a ```text block.
func quotedMessages(blocks []block) map[string]int {
	out := map[string]int{}
	for _, b := range blocks {
		if b.lang == "go" {
			continue
		}
		for i, l := range b.lines {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			if b.lang == "text" || slices.ContainsFunc(messagePrefixes, func(p string) bool { return strings.HasPrefix(l, p) }) {
				if _, seen := out[l]; !seen {
					out[l] = b.line + i
				}
			}
		}
	}
	return out
}

// checkedLines returns every line that the module's tests hold output to:
// the lines of each example's Output comment, and the lines of every
// string literal in a test file (a concatenation of literals counts as
// one).
func checkedLines(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	add := func(s string) {
		for _, l := range strings.Split(s, "\n") {
			out[strings.TrimSpace(l)] = true
		}
	}
	fset := token.NewFileSet()
	for _, f := range goFiles(t, root) {
		if !strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(root, f), nil, parser.ParseComments)
		require.NoError(t, err)
		for _, ex := range doc.Examples(file) {
			add(ex.Output)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok {
				if s, ok := stringConstant(e); ok {
					add(s)
					return false
				}
			}
			return true
		})
	}
	return out
}

// stringConstant returns the value of a string literal or of a sum of
// them.
func stringConstant(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.ParenExpr:
		return stringConstant(e.X)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		x, ok := stringConstant(e.X)
		if !ok {
			return "", false
		}
		y, ok := stringConstant(e.Y)
		return x + y, ok
	}
	return "", false
}

// TestDocsQuotedMessages: every message the checked pages quote as
// canonlog's output is a whole line of an example's Output comment or of a
// string literal in a test, so that rewording the message in the code
// fails until the page quotes the new words.
func TestDocsQuotedMessages(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	checked := checkedLines(t, root)
	for _, page := range checkedDocs {
		text, err := os.ReadFile(filepath.Join(root, page))
		require.NoError(t, err)
		msgs := quotedMessages(fencedBlocks(t, page, string(text)))
		lines := make([]string, 0, len(msgs))
		for m := range msgs {
			lines = append(lines, m)
		}
		slices.SortFunc(lines, func(a, b string) int { return msgs[a] - msgs[b] })
		for _, m := range lines {
			if !checked[m] {
				t.Errorf("%s:%d: the quoted message is checked by no test: produce it in an example test and quote its Output "+
					"(or expect it, whole, in a test's string literal), then copy it verbatim into the page:\n%s", page, msgs[m], m)
			}
		}
	}
}
