//! [`HubBulk`] on sled: the hub's streams, live records and imports, each run off the
//! async runtime (a stream's index may have to be loaded, and an import flushes).
//!
//! The work is the hub's (`hub::bulk`); this module only moves it to a blocking
//! thread and back.

use async_trait::async_trait;

use super::store::SledStore;
use crate::StoreError;
use crate::hub::{HubBulk, HubError, Record, StreamImport};

/// Runs `work` on the hub on a blocking thread.
async fn blocking<T: Send + 'static, E: From<HubError> + Send + 'static>(
    store: &SledStore,
    work: impl FnOnce(&super::SledHub) -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    let hub = store.sled_hub().clone();
    tokio::task::spawn_blocking(move || work(&hub))
        .await
        .map_err(|e| E::from(HubError::Storage(e.to_string())))?
}

#[async_trait]
impl HubBulk for SledStore {
    async fn streams(&self) -> Result<Vec<(String, String)>, HubError> {
        blocking(self, |hub| hub.streams()).await
    }

    async fn live_records(
        &self,
        connection: &str,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Record>, u64), HubError> {
        let (connection, stream) = (connection.to_owned(), stream.to_owned());
        blocking(self, move |hub| {
            hub.live_records(&connection, &stream, after, limit)
        })
        .await
    }

    async fn import(&self, import: StreamImport) -> Result<(), StoreError> {
        let time_ms = u64::try_from(import.at_unix_ms).unwrap_or(0);
        blocking(self, move |hub| {
            hub.import(
                &import.connection,
                &import.stream,
                &import.changes,
                import.cursor.as_deref(),
                time_ms,
            )
        })
        .await
    }
}
