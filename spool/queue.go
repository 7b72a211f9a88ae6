package spool

import "container/heap"

// queue holds the waiting records, oldest first. A heap rather than a FIFO
// because released and adopted records go back among newer ones.
type queue []entry

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].id.less(q[j].id) }
func (q queue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)        { *q = append(*q, x.(entry)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func (q *queue) push(e entry) { heap.Push(q, e) }
func (q *queue) pop() entry   { return heap.Pop(q).(entry) }
func (q queue) peek() entry   { return q[0] }
func heapify(q *queue)        { heap.Init(q) }
