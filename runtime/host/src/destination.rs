//! Writing a stream: a writer resource living in its own store.

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::HostError;
use crate::batch::validate_records;
use crate::bindings::destination::DestinationConnector;
use crate::call::guarded;
use crate::state::State;

/// An open writer of a destination connector.
pub struct DestinationWriter {
    store: Store<State>,
    bindings: DestinationConnector,
    writer: ResourceAny,
    poisoned: bool,
}

impl DestinationWriter {
    pub(crate) fn new(
        store: Store<State>,
        bindings: DestinationConnector,
        writer: ResourceAny,
    ) -> Self {
        Self {
            store,
            bindings,
            writer,
            poisoned: false,
        }
    }

    /// Write `count` records of NDJSON. Returns the records durably written so far.
    pub async fn write(&mut self, ndjson: &[u8], count: u32) -> Result<u64, HostError> {
        let call = "destination.writer.write";
        let grant = &self.store.data().grant;
        validate_records(ndjson, count, grant.limits.max_record_bytes).map_err(|e| {
            let e = match e.into_host_error(call) {
                HostError::MalformedOutput { call, reason } => HostError::MalformedOutput {
                    call,
                    reason: format!("refusing to send: {reason}"),
                },
                other => other,
            };
            e.sealed(grant)
        })?;
        let Self {
            store,
            bindings,
            writer,
            poisoned,
        } = self;
        let writer = *writer;
        run(store, poisoned, call, async |s| {
            bindings
                .sluice_connector_destination()
                .writer()
                .call_write(s, writer, ndjson)
                .await
        })
        .await
    }

    /// Make everything written durable. Returns the records durably written.
    pub async fn flush(&mut self) -> Result<u64, HostError> {
        let Self {
            store,
            bindings,
            writer,
            poisoned,
        } = self;
        let writer = *writer;
        run(store, poisoned, "destination.writer.flush", async |s| {
            bindings
                .sluice_connector_destination()
                .writer()
                .call_flush(s, writer)
                .await
        })
        .await
    }
}

/// Run one writer call; any failure but the connector's own poisons the writer.
async fn run<F>(
    store: &mut Store<State>,
    poisoned: &mut bool,
    call: &'static str,
    f: F,
) -> Result<u64, HostError>
where
    F: AsyncFnOnce(&mut Store<State>) -> crate::call::GuestResult<crate::bindings::wit::WriteAck>,
{
    if *poisoned {
        return Err(HostError::Poisoned { call });
    }
    let result = guarded(store, call, f).await;
    if let Err(e) = &result
        && !matches!(e, HostError::Connector { .. })
    {
        *poisoned = true;
    }
    result.map(|ack| ack.durable_records)
}
