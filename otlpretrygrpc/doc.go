// Package otlpretrygrpc puts an otlpretry.Transport under the OTel Go
// OTLP/gRPC exporters (otlptracegrpc, otlpmetricgrpc, otlploggrpc), so
// that their exports survive outages as the OTLP/HTTP exporters' do: the
// first attempt, one immediate retry, a bounded hold, then the spool on
// disk and background delivery. It is a module of its own so that a
// program that exports over HTTP only links no gRPC.
//
// The setup is the Transport's, with DialOption in the exporter's
// WithDialOption, and the Transport shut down after the provider:
//
//	rt, err := otlpretry.New()
//	if err != nil { ... }
//	defer rt.Shutdown(ctx)
//	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
//
// (otlpmetricgrpc.WithDialOption and otlploggrpc.WithDialOption alike;
// one Transport serves all three, over HTTP and gRPC at once.)
//
// The interceptor acts on the three OTLP Export methods and lets every
// other call pass untouched. Each export takes the path the otlpretry
// package documentation describes, with gRPC status codes in place of
// HTTP statuses, as the OTLP specification lists them:
//
//   - Cancelled, DeadlineExceeded and Unavailable count as no answer (the
//     destination is probed every 100 ms);
//   - Aborted, OutOfRange and DataLoss as a busy server;
//   - ResourceExhausted as a busy server when it carries RetryInfo, else
//     as a refusal;
//   - every other code is a refusal, returned to the exporter as it came,
//     as is a partial success.
//
// RetryInfo's delay is obeyed as Retry-After is. A stored export is
// answered with success and an empty reply.
//
// A gRPC destination is the connection's target and the method, stored as
// grpc://host:port/<method> (grpcs:// once the connection is seen to use
// TLS), each with its own circuit and lane. The stored body is the
// serialized Export*ServiceRequest, uncompressed: the same bytes as an
// OTLP/HTTP protobuf body. The background sender sends it as stored over
// the latest live connection to its destination, with that call's
// metadata and compression; with no live connection, headers given with
// otlpretry.WithEndpointHeaders for the grpc:// URL are sent as metadata
// over a connection of the Transport's own; with neither, it waits
// ("waiting for credentials"). Metadata is never stored. In a program
// that links this package, every Transport can send what an earlier
// process stored for gRPC destinations from otlpretry.New on. A request given
// to the interceptor as []byte (a serialized request, as a relay forwards
// it) is sent as it is.
package otlpretrygrpc
