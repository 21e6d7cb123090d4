//! Which kind of target a table goes to.
//!
//! Tables with secondary indexes need a store that can serve those access paths (a
//! relational target with secondary indexes: Spanner or PostgreSQL); tables without are
//! pure key-value and go to a wide-column target (Bigtable).

use crate::schema::TableSchema;

/// The kind of target a table is loaded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// Spanner or PostgreSQL: typed columns, primary key, secondary indexes.
    Relational,
    /// Bigtable: one row per item, row key from the table's keys.
    WideColumn,
}

/// How a pipeline decides a table's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteRule {
    /// Any GSI or LSI → relational; none → wide-column.
    #[default]
    Auto,
    Relational,
    WideColumn,
}

impl RouteRule {
    pub fn route(self, schema: &TableSchema) -> Route {
        self.route_by_indexes(schema.has_secondary_indexes())
    }

    /// The route of a table that has (or has not) any GSI/LSI.
    pub fn route_by_indexes(self, has_secondary_indexes: bool) -> Route {
        match self {
            RouteRule::Auto if has_secondary_indexes => Route::Relational,
            RouteRule::Auto => Route::WideColumn,
            RouteRule::Relational => Route::Relational,
            RouteRule::WideColumn => Route::WideColumn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::sample_schema;

    #[test]
    fn auto_routes_by_secondary_indexes_and_overrides_win() {
        let mut s = sample_schema();
        assert!(s.has_secondary_indexes());
        assert_eq!(RouteRule::Auto.route(&s), Route::Relational);
        assert_eq!(RouteRule::WideColumn.route(&s), Route::WideColumn);
        s.global_secondary_indexes.clear();
        assert_eq!(RouteRule::Auto.route(&s), Route::Relational, "the LSI still counts");
        s.local_secondary_indexes.clear();
        assert_eq!(RouteRule::Auto.route(&s), Route::WideColumn);
        assert_eq!(RouteRule::Relational.route(&s), Route::Relational);
    }
}
