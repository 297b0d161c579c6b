//! Placeholders (`{mode}`, `{config}`, `{port}`, `{port1}`..., `{slot}`, `{session_id}`):
//! `protocol::catalog`'s, parsed once when an entry is checked and expanded in a single pass
//! at launch; tested here through the catalog.

pub(super) use protocol::catalog::{Placeholder, Template, Values};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::catalog::test_support::*;
    use crate::catalog::{Catalog, GameEntry};

    #[test]
    fn a_value_is_never_expanded_twice() {
        let cat = Catalog::from_entries([(
            "g".to_owned(),
            GameEntry {
                command: "/bin/echo".into(),
                args: vec!["{mode}{port}".into()],
                modes: vec!["{port}".into()],
                ..GameEntry::default()
            },
        )])
        .unwrap();
        let spec = cat
            .resolve(
                &req(game("g"), None, None, &BTreeMap::new()),
                &lease(7),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.args, vec!["{port}7".to_owned()]);
    }
}
