package main

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// EnvOTLPTracesEndpoint is OpenTelemetry's standard variable for where
// traces go; fleetd serve traces when it (or --otlp-traces-endpoint) is
// set.
const EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"

// newOTLPTracerProvider returns a tracer provider that sends fleetd's
// spans to an OpenTelemetry collector over OTLP/HTTP at endpoint (a URL
// such as http://collector:4318/v1/traces), in batches, as service
// "fleetd". Shut it down to send what is left.
func newOTLPTracerProvider(ctx context.Context, endpoint string) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("traces to %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", "fleetd")))
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
