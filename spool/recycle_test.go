package spool

import "testing"

// Every pooled size has one class whose buffers hold it with little to
// spare, and a buffer given back goes to the class it came from.
func TestSizeClass(t *testing.T) {
	prevIndex, prevSize := -1, 0
	for n := 0; n <= maxPooledBody; n++ {
		i, size := sizeClass(n)
		if i < 0 || i >= readBufClasses {
			t.Fatalf("sizeClass(%d) index %d, out of 0..%d", n, i, readBufClasses-1)
		}
		if size < n || size > max(n+n/4, n+1<<10) {
			t.Fatalf("sizeClass(%d) size %d: below the record, or more than a quarter or 1 KiB above it", n, size)
		}
		if i < prevIndex || (i == prevIndex) != (size == prevSize) {
			t.Fatalf("sizeClass(%d) = %d, %d after %d, %d: classes not in order, or a class of two sizes", n, i, size, prevIndex, prevSize)
		}
		if j, s := sizeClass(size); j != i || s != size {
			t.Fatalf("a buffer of class %d (%d bytes) given back goes to class %d (%d bytes)", i, size, j, s)
		}
		prevIndex, prevSize = i, size
	}
	if prevIndex != readBufClasses-1 || prevSize != maxPooledBody {
		t.Fatalf("the largest class is %d of %d bytes, want %d of %d", prevIndex, prevSize, readBufClasses-1, maxPooledBody)
	}
	// An 8 KiB export's record (body and about 100 bytes) takes a 9 KiB
	// buffer.
	if _, size := sizeClass(8<<10 + 100); size != 9<<10 {
		t.Errorf("a record of 8 KiB and 100 bytes is read into %d bytes, want %d", size, 9<<10)
	}
}
