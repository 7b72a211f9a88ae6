//go:build !unix

package spool

func setTestUmask() {}
