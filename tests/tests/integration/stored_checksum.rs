//! Stored bytes are checked: the relay records the CRC32C of every part it stores, the
//! completion check refuses a part whose bytes GCS now reports differently, and the
//! loader checks the stored bytes against the marker before decoding them.

use crossdock_core::layout::DumpFile;
use crossdock_core::marker::Crc32c;
use crossdock_core::Codec;
use crossdock_load::run::{self, LoadOptions};
use crossdock_load::schema::{TableModel, TargetKind};
use crossdock_load::sink::postgres::PostgresTarget;
use crossdock_load::sink::Target;
use crossdock_load::LoadError;
use crossdock_tests::relay::*;
use crossdock_tests::resources::TempPgSchema;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;

/// Flips one bit in the middle of the object's bytes, keeping its length and metadata:
/// damage behind the relay's back that its provenance cannot show.
async fn corrupt_keeping_metadata(gcs: &gcloud_storage::client::Client, bucket: &str, name: &str) -> Object {
    let before = get(gcs, bucket, name).await.unwrap_or_else(|| panic!("gs://{bucket}/{name} missing"));
    let mut body = download(gcs, bucket, name).await.expect("download");
    let mid = body.len() / 2;
    body[mid] ^= 0x01;
    let req = UploadObjectRequest { bucket: bucket.into(), ..Default::default() };
    let meta = Object { name: name.into(), content_type: before.content_type.clone(), metadata: before.metadata.clone(), ..Default::default() };
    gcs.upload_object(&req, body, &UploadType::Multipart(Box::new(meta))).await.unwrap_or_else(|e| panic!("overwrite gs://{bucket}/{name}: {e:?}"));
    let after = get(gcs, bucket, name).await.expect("overwritten object");
    assert_eq!(after.metadata, before.metadata, "the provenance is kept");
    assert_eq!(after.size, before.size, "same length");
    assert_ne!(after.crc32c, before.crc32c, "GCS reports the new bytes' CRC32C");
    after
}

#[tokio::test]
async fn a_part_corrupted_behind_the_relays_back_gets_no_marker_until_relayed_again() {
    let w = Wired::new("crcrelay", 30, None).await;
    let e = FakeExport::new("crc", "Stored", 1, 2, 400);
    let gcs = crossdock_tests::gcs().await;
    let manifest = DumpFile::Manifest { segment: 0, total: 1 };
    // Everything but the manifest: the export is not complete yet.
    for (f, body) in e.files() {
        if f != manifest {
            let key = e.export.s3_key("", &f);
            w.src.client.put_object().bucket(&w.src.name).key(&key).body(body.into()).send().await.expect("put");
        }
    }
    let first = crossdock_relay::run(w.relay(w.settings()).await, std::future::pending()).await.expect("relay runs");
    assert_eq!((first.copied as usize, first.markers_written), (e.file_count() - 1, 0), "{first:?}");

    // The relay recorded the CRC32C of what it stored, and it is GCS's.
    let part = e.export.gcs_key(&DumpFile::Part { segment: 0, part: 1, codec: Codec::None }, Codec::Zstd);
    let o = get(&gcs, &w.gcs.name, &part).await.expect("part relayed");
    let recorded = o.metadata.as_ref().and_then(|m| m.get("crossdock-stored-crc32c").cloned()).expect("crossdock-stored-crc32c recorded");
    let bytes = download(&gcs, &w.gcs.name, &part).await.expect("part bytes");
    assert_eq!(recorded, Crc32c::of(&bytes).to_gcs());
    assert_eq!(o.crc32c.as_deref(), Some(recorded.as_str()));

    corrupt_keeping_metadata(&gcs, &w.gcs.name, &part).await;
    // The last file arrives; a fresh relay copies it and checks completion.
    let key = e.export.s3_key("", &manifest);
    let body = e.files().into_iter().find(|(f, _)| *f == manifest).expect("manifest").1;
    w.src.client.put_object().bucket(&w.src.name).key(&key).body(body.into()).send().await.expect("put manifest");
    let second = crossdock_relay::run(w.relay(w.settings()).await, std::future::pending()).await.expect("relay runs");
    assert_eq!((second.copied, second.markers_written, second.failed), (1, 0, 0), "{second:?}");
    assert!(get(&gcs, &w.gcs.name, &e.export.marker_key()).await.is_none(), "no _SUCCESS over a corrupted part");

    // The part's event again (as a redelivery would bring it): not a duplicate any more,
    // so it is copied again and the export is marked, with the CRC32C of the new copy.
    let src_key = e.export.s3_key("", &DumpFile::Part { segment: 0, part: 1, codec: Codec::None });
    let head = w.src.client.head_object().bucket(&w.src.name).key(&src_key).send().await.expect("head");
    let event = serde_json::json!({"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
        "s3":{"bucket":{"name": w.src.name},"object":{"key": src_key.replace(' ', "+"),"eTag": head.e_tag().unwrap_or_default()}}}]});
    w.queue.client.send_message().queue_url(&w.queue.url).message_body(event.to_string()).send().await.expect("send");
    let third = crossdock_relay::run(w.relay(w.settings()).await, std::future::pending()).await.expect("relay runs");
    assert_eq!((third.copied, third.skipped, third.markers_written), (1, 0, 1), "{third:?}");
    let marker = e.verify_in_gcs(&gcs, &w.gcs.name, Codec::Zstd).await;
    for f in &marker.files {
        let bytes = download(&gcs, &w.gcs.name, &format!("{}{}", e.export.dir(), f.name)).await.expect("part");
        assert_eq!(f.stored_crc32c, Some(Crc32c::of(&bytes)), "{}", f.name);
    }
}

#[tokio::test]
async fn the_loader_refuses_a_part_whose_stored_bytes_changed_before_decoding_it() {
    let w = Wired::new("crcload", 30, None).await;
    let e = FakeExport::new("crc", "Loaded", 1, 2, 300);
    e.put_all(&w.src.client, &w.src.name, "").await;
    let summary = crossdock_relay::run(w.relay(w.settings()).await, std::future::pending()).await.expect("relay runs");
    assert_eq!(summary.markers_written, 1, "{summary:?}");
    let gcs = crossdock_tests::gcs().await;
    let relayed = e.verify_in_gcs(&gcs, &w.gcs.name, Codec::Zstd).await;
    assert!(relayed.files.iter().all(|f| f.stored_crc32c.is_some()), "{:?}", relayed.files);

    let part = e.export.gcs_key(&DumpFile::Part { segment: 0, part: 0, codec: Codec::None }, Codec::Zstd);
    corrupt_keeping_metadata(&gcs, &w.gcs.name, &part).await;
    let url = format!("gs://{}/{}", w.gcs.name, e.export.marker_key());
    let marker = crossdock_load::marker::read(gcs, &url).await.expect("read marker");
    let pg = TempPgSchema::new("crc").await;
    let t = PostgresTarget::connect(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"), &pg.name).await.expect("connect postgres");
    let model = TableModel::infer(TargetKind::Postgres, &marker.marker.schema, &marker.marker.type_stats, None).expect("model");
    let plan = run::batch_plan(&t.batch_limits(&model), &Default::default());
    match run::load(&marker, &t, &model, &plan, &LoadOptions::default(), std::future::pending()).await {
        Err(err @ LoadError::CorruptFile { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&format!("gs://{}/{part}", w.gcs.name)), "names the corrupt file: {text}");
            // Refused on its stored bytes, before anything was decoded from them.
            assert!(text.contains("CRC32C"), "the stored checksum refused it: {text}");
        }
        r => panic!("expected CorruptFile, got {r:?}"),
    }
    assert_eq!(t.count_rows(&model).await.unwrap_or(0), 0, "nothing from the corrupt file was written");
}
