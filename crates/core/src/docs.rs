//! Keeps docs/format.md true: every tagged example in it (```json schema, ```json
//! manifest, …, ```toml pipeline) must parse with the types the phases use.

#[cfg(test)]
mod tests {
    use crate::{manifest, marker, pipeline, schema};

    const FORMAT_MD: &str = include_str!("../../../docs/format.md");

    /// The fenced blocks whose info string is `{lang} {tag}`.
    fn examples(lang: &str, tag: &str) -> Vec<&'static str> {
        let fence = format!("```{lang} {tag}\n");
        FORMAT_MD.split(&fence).skip(1).map(|rest| rest.split("\n```").next().unwrap_or_default()).collect()
    }

    fn parse_all<T: serde::de::DeserializeOwned>(tag: &str) -> usize {
        let blocks = examples("json", tag);
        for b in &blocks {
            if let Err(e) = serde_json::from_str::<T>(b) {
                panic!("docs/format.md example `{tag}` does not parse: {e}\n{b}");
            }
        }
        blocks.len()
    }

    #[test]
    fn every_example_in_format_md_parses() {
        assert_eq!(parse_all::<schema::TableSchema>("schema"), 1);
        assert_eq!(parse_all::<manifest::SegmentManifest>("manifest"), 1);
        assert_eq!(parse_all::<manifest::CapacityLease>("capacity"), 1);
        assert_eq!(parse_all::<manifest::SegmentCheckpoint>("checkpoint"), 1);
        assert_eq!(parse_all::<marker::SuccessMarker>("marker"), 1);
        assert_eq!(parse_all::<marker::LoadedRecord>("loaded"), 1);
        let toml = examples("toml", "pipeline");
        assert_eq!(toml.len(), 1);
        let p = pipeline::PipelineFile::parse("format.md", toml[0]).expect("pipeline example parses");
        let built = p.build("format.md", |_| Some("acme".into())).expect("pipeline example is valid");
        assert_eq!(built.tables.len(), 2);
    }

    #[test]
    fn the_item_example_round_trips() {
        let line = FORMAT_MD.lines().find(|l| l.starts_with("{\"Item\":")).expect("an item example");
        let item = crate::item::parse_line(line, 1).expect("item example parses");
        assert_eq!(crate::item::to_line(&item), line);
    }
}
