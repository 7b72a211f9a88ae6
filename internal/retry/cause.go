package retry

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
)

// Cause names, in a few words for a log line or a status page, why an
// attempt did not deliver: "name not found", "TLS handshake failed:
// <reason>", "connection refused", "connection reset", "timeout",
// "HTTP 503 Service Unavailable". resp and err are what
// http.RoundTripper.RoundTrip or http.Client.Do returned; resp is neither
// read nor closed. It returns "" for a 2xx answer. An error it has no
// name for is given as its text, without the URL an *url.Error adds
// (which may hold credentials).
func Cause(resp *http.Response, err error) string {
	if err == nil {
		if resp == nil {
			return "no answer"
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return ""
		}
		return status(resp.StatusCode)
	}
	var (
		dns       *net.DNSError
		record    tls.RecordHeaderError
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		errno     syscall.Errno
		netErr    net.Error
		urlErr    *url.Error
		unwrapped = err
	)
	switch {
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "name not found"
		}
		return "name lookup failed: " + dns.Err
	case errors.As(err, &record):
		return "TLS handshake failed: " + record.Error()
	case errors.As(err, &verify):
		return "TLS handshake failed: " + verify.Err.Error()
	case errors.As(err, &alert):
		return "TLS handshake failed: " + alert.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without an answer"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &errno):
		// EHOSTUNREACH, ENETUNREACH and the like read well as they are.
		return errno.Error()
	case errors.As(err, &urlErr):
		unwrapped = urlErr.Err
	}
	if msg := unwrapped.Error(); msg != httpToHTTPS {
		return msg
	}
	return "TLS handshake failed: " + httpToHTTPS
}

// httpToHTTPS is the text of the error http.Client.Do returns, in place of
// a tls.RecordHeaderError, when an https:// URL reaches a plaintext HTTP
// port. net/http exports no value for it.
const httpToHTTPS = "http: server gave HTTP response to HTTPS client"

// status names an HTTP status: "HTTP 503 Service Unavailable".
func status(code int) string {
	if text := http.StatusText(code); text != "" {
		return "HTTP " + strconv.Itoa(code) + " " + text
	}
	return "HTTP " + strconv.Itoa(code)
}

// refusalSnippet bounds how much of a refusal's body names its reason.
const refusalSnippet = 512

// Refusal reads the start of a refused export's answer and gives the reason
// it is quarantined: "HTTP 400: <start of the body>". It reads at most 512
// bytes of resp.Body and neither drains nor closes it.
func Refusal(resp *http.Response) string {
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, refusalSnippet))
	return fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
}
