//! Attributes that first appear in the change stream. The target's columns come from
//! the export's type statistics, so an attribute the application starts writing after
//! the export has no column. Rather than drop it (or stop the catch-up), the sync adds
//! a nullable JSON column for it — DynamoDB typed JSON, as the loader stores
//! mixed-type attributes — and records the attribute in `_sync/_columns.json`, so a
//! restarted sync, `verify` and `audit` read the same columns.
//!
//! A new *type* for a known attribute (text into a number column) is not widened: the
//! sync stops with [`crate::error::NEW_ATTRIBUTE_HINT`] before anything of the batch is
//! checkpointed, so nothing is lost while the operator re-exports.

use crate::error::SyncError;
use crossdock_load::schema::{Column, TableModel};
use serde::{Deserialize, Serialize};

/// `_sync/_columns.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedColumns {
    pub format_version: u32,
    /// In the order they were added.
    pub attributes: Vec<String>,
    pub written_at: String,
}

impl AddedColumns {
    pub fn new(attributes: &[String]) -> Self {
        AddedColumns { format_version: 1, attributes: attributes.to_vec(), written_at: crossdock_core::stamp::now_rfc3339() }
    }
}

/// Adds a JSON column to `model` for each of `attributes` it lacks; returns the new ones.
pub fn widen(model: &mut TableModel, attributes: &[String]) -> Result<Vec<Column>, SyncError> {
    let mut added = Vec::new();
    for a in attributes {
        if model.columns.iter().any(|c| c.attribute == *a) {
            continue;
        }
        added.push(model.add_attribute(a).map_err(|source| SyncError::Load { table: model.source_table.clone(), source })?);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_load::conformance::sample_model;
    use crossdock_load::schema::{ColumnType, TargetKind};

    #[test]
    fn new_attributes_become_json_columns_once() {
        let (mut model, _) = sample_model(TargetKind::Postgres, "t", 4, false);
        let before = model.columns.len();
        let added = widen(&mut model, &["loyalty tier".into(), "pk".into()]).expect("widen");
        assert_eq!(added.len(), 1, "pk already has a column");
        assert_eq!((added[0].name.as_str(), added[0].ty, added[0].key), ("x_loyalty_20tier", ColumnType::Json, false));
        assert!(widen(&mut model, &["loyalty tier".into()]).expect("again").is_empty());
        assert_eq!(model.columns.len(), before + 1);
    }

    #[test]
    fn a_name_that_collides_is_refused_not_merged() {
        let (mut model, _) = sample_model(TargetKind::Spanner, "t", 4, false);
        // Spanner folds case: "PRICE" would share the column of "price".
        let e = widen(&mut model, &["PRICE".into()]).expect_err("collision");
        assert!(e.to_string().contains("same spanner column name"), "{e}");
        assert!(!model.columns.iter().any(|c| c.attribute == "PRICE"), "the model is unchanged");
    }
}
