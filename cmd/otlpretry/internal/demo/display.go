package demo

import (
	"fmt"
	"io"
	"sync"
)

// display writes the live status line and the events above it. On a
// terminal the status line is redrawn in place (carriage return, then
// "erase line"); elsewhere each status is a plain line of its own.
type display struct {
	mu       sync.Mutex
	out      io.Writer
	terminal bool
	width    func() int // terminal columns; 0 when unknown
	last     string     // the status line on screen (terminal only)
}

const clearLine = "\r\x1b[2K"

func (d *display) fit(s string) string {
	if w := d.width(); w > 1 && len(s) > w-1 {
		return s[:w-1]
	}
	return s
}

// status shows line as the current status.
func (d *display) status(line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.terminal {
		d.last = d.fit(line)
		fmt.Fprint(d.out, clearLine+d.last)
		return
	}
	fmt.Fprintln(d.out, line)
}

// event prints a line above the status line.
func (d *display) event(line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.terminal {
		fmt.Fprint(d.out, clearLine+line+"\n"+d.last)
		return
	}
	fmt.Fprintln(d.out, line)
}

// finish leaves the last status line on screen and ends it.
func (d *display) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.terminal && d.last != "" {
		fmt.Fprint(d.out, clearLine+d.last+"\n")
		d.last = ""
	}
}

// print writes text as is, below everything.
func (d *display) print(text string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprint(d.out, text)
}
