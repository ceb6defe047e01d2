//! The catalog: documents by kind and name, durable once acknowledged.

use sluice_store::StoreError;

use crate::Site;

pub async fn documents_are_put_replaced_listed_and_removed(site: &dyn Site) {
    {
        let store = site.open().await;
        let catalog = store.catalog();
        assert!(!catalog.put("workflow", "b", b"{\"v\":1}").await.unwrap());
        assert!(!catalog.put("workflow", "a", b"{\"v\":1}").await.unwrap());
        assert!(catalog.put("workflow", "a", b"{\"v\":2}").await.unwrap());
        assert!(!catalog.put("connection", "a", b"{}").await.unwrap());
        catalog
            .put_unflushed("schedule", "a", b"{\"fire\":1}")
            .await
            .unwrap();
        // An acknowledged durable write makes the unflushed one durable too.
        catalog.put("connection", "z", b"{}").await.unwrap();
    }
    let store = site.open().await;
    let catalog = store.catalog();
    assert_eq!(
        catalog.get("workflow", "a").await.unwrap().as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
    assert_eq!(catalog.get("workflow", "c").await.unwrap(), None);
    assert_eq!(
        catalog.get("schedule", "a").await.unwrap().as_deref(),
        Some(&b"{\"fire\":1}"[..])
    );
    let names: Vec<String> = catalog
        .list("workflow")
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["a", "b"], "listed by name, one kind only");
    assert!(catalog.remove("workflow", "a").await.unwrap());
    assert!(!catalog.remove("workflow", "a").await.unwrap());
    assert_eq!(catalog.get("workflow", "a").await.unwrap(), None);
    assert_eq!(catalog.list("workflow").await.unwrap().len(), 1);
    // A kind whose name another kind's starts with is listed apart.
    catalog.put("work", "x", b"{}").await.unwrap();
    assert_eq!(catalog.list("work").await.unwrap().len(), 1);
    assert_eq!(catalog.list("workflow").await.unwrap().len(), 1);
}

pub async fn bad_names_are_refused(site: &dyn Site) {
    let store = site.open().await;
    let catalog = store.catalog();
    for (kind, name) in [("", "a"), ("work\0flow", "a"), ("workflow", "a\0b")] {
        let put = catalog.put(kind, name, b"{}").await;
        assert!(
            matches!(put, Err(StoreError::Invalid(_))),
            "{kind:?}/{name:?}: {put:?}"
        );
    }
    assert!(catalog.list("workflow").await.unwrap().is_empty());
}
