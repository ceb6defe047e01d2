//! Reading a stream: a reader resource living in its own store, batch by batch.

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::HostError;
use crate::batch::Batch;
use crate::bindings::source::SourceContract;
use crate::call::guarded;
use crate::state::State;

/// An open stream of a source connector.
pub struct SourceReader {
    store: Store<State>,
    bindings: SourceContract,
    reader: ResourceAny,
    poisoned: bool,
}

impl SourceReader {
    pub(crate) fn new(store: Store<State>, bindings: SourceContract, reader: ResourceAny) -> Self {
        Self {
            store,
            bindings,
            reader,
            poisoned: false,
        }
    }

    /// The next batch of at most `max_records` records, or `None` at the end of the
    /// stream. After an error other than a connector's own, the reader is unusable.
    pub async fn next(&mut self, max_records: u32) -> Result<Option<Batch>, HostError> {
        let call = "source.reader.next";
        if self.poisoned {
            return Err(HostError::Poisoned { call });
        }
        // A source is told the smaller of what the caller wants and what the grant
        // accepts, so that a source honouring its argument is never refused for size.
        let max_records = max_records.min(self.store.data().grant.limits.max_batch_records);
        let reader = self.reader;
        let bindings = &self.bindings;
        let result = guarded(&mut self.store, call, async |s| {
            bindings
                .sluice_connector_source()
                .reader()
                .call_next(s, reader, max_records)
                .await
        })
        .await;
        let grant = &self.store.data().grant;
        let result = result.and_then(|batch| {
            batch
                .map(|b| {
                    Batch::accept(call, b, &grant.limits, max_records).map_err(|e| e.sealed(grant))
                })
                .transpose()
        });
        if let Err(e) = &result
            && !matches!(e, HostError::Connector { .. })
        {
            self.poisoned = true;
        }
        result
    }
}
