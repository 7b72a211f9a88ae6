// Testlog reads `go test -json` on stdin and prints what `go test` prints
// for a list of packages, plus what each package prints outside its tests
// (a TestMain's report, such as the e2e suite's table and its
// "N passed, N failed" line):
//
//   - every line a package prints outside a test: its TestMain's output
//     and its "ok", "FAIL" or "no test files" line, in the order go test
//     reports the packages;
//   - the whole output of every test that failed, and of every test still
//     running when its package failed (a panic, a timeout);
//   - build errors, and any line that is not a JSON event, as it is.
//
// It never decides the outcome: run it as
// `go test -json ... | go run .ci/testlog.go` under `set -o pipefail`,
// so that go test's exit status is the step's.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// event is the part of a test2json event used here.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	out := bufio.NewWriter(os.Stdout)
	// held is the output of each test that has not ended yet, by package
	// and test, in the order the tests started.
	held := map[string]map[string][]string{}
	order := map[string][]string{}
	release := func(pkg, test string, print bool) {
		if print {
			for _, line := range held[pkg][test] {
				fmt.Fprint(out, line)
			}
		}
		delete(held[pkg], test)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for in.Scan() {
		var e event
		if err := json.Unmarshal(in.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(out, in.Text())
			continue
		}
		switch {
		case e.Action == "output" && e.Test == "" && e.Output == "PASS\n":
			// go test prints a passing package's result line alone.
		case e.Action == "build-output", e.Action == "output" && e.Test == "":
			fmt.Fprint(out, e.Output)
		case e.Action == "output":
			if held[e.Package] == nil {
				held[e.Package] = map[string][]string{}
			}
			if _, ok := held[e.Package][e.Test]; !ok {
				order[e.Package] = append(order[e.Package], e.Test)
			}
			held[e.Package][e.Test] = append(held[e.Package][e.Test], e.Output)
		case e.Test != "" && (e.Action == "pass" || e.Action == "skip" || e.Action == "fail"):
			release(e.Package, e.Test, e.Action == "fail")
		case e.Test == "" && (e.Action == "pass" || e.Action == "skip" || e.Action == "fail"):
			for _, test := range order[e.Package] {
				release(e.Package, test, e.Action == "fail")
			}
			delete(held, e.Package)
			delete(order, e.Package)
		}
		out.Flush()
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(out, "testlog:", err)
		out.Flush()
		os.Exit(1)
	}
	out.Flush()
}
