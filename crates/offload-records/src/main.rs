//! `offload-records`: serves the records API with its workers in-process.

use clap::Parser;
use offload_records::{Config, LogFormat};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut layers: Vec<BoxedLayer> = vec![match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    }];
    let exporter = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let (layer, provider) = otlp::layer(endpoint)?;
            layers.push(layer);
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .init();
    let served = offload_records::server::run_from_url(config, offload::shutdown_signal()).await;
    if let Some(provider) = exporter {
        otlp::shutdown(provider);
    }
    served
}

/// Span export over OTLP (gRPC), with the `otel` feature.
#[cfg(feature = "otel")]
mod otlp {
    use anyhow::Context as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer as _;

    use super::BoxedLayer;

    /// A layer sending every span (offload's `job` spans included) to
    /// `endpoint`, and the provider to flush at exit.
    pub fn layer(endpoint: &str) -> anyhow::Result<(BoxedLayer, SdkTracerProvider)> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("could not set up OTLP export to {endpoint}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("offload-records")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("offload-records");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((layer, provider))
    }

    /// Sends the spans still buffered.
    pub fn shutdown(provider: SdkTracerProvider) {
        if let Err(error) = provider.shutdown() {
            eprintln!("OTLP export did not flush: {error}");
        }
    }
}

#[cfg(not(feature = "otel"))]
mod otlp {
    use super::BoxedLayer;

    pub enum Never {}

    pub fn layer(endpoint: &str) -> anyhow::Result<(BoxedLayer, Never)> {
        anyhow::bail!(
            "--otlp-endpoint {endpoint} needs offload-records built with `--features otel`"
        )
    }

    pub fn shutdown(provider: Never) {
        match provider {}
    }
}
