//! Naming a VM or a snapshot the way people do: its full id, a unique
//! prefix of its id, or its name. An ambiguous prefix or name is an error
//! that lists the candidates, never a guess.

/// Something with an id and a name.
pub trait Named {
    fn id(&self) -> String;
    fn name(&self) -> &str;
}

impl Named for fastvm_proto::api::VmInstance {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for fastvm_proto::api::SnapshotObject {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// The one item of `items` that `wanted` names (`what`: "VM", "snapshot").
/// An exact id or name wins over prefixes; otherwise exactly one id must
/// start with `wanted`.
pub fn resolve<'a, T: Named>(items: &'a [T], wanted: &str, what: &str) -> Result<&'a T, String> {
    if wanted.is_empty() {
        return Err(format!(
            "no {what} named: give an id, an id prefix or a name"
        ));
    }
    if let Some(item) = items.iter().find(|i| i.id() == wanted) {
        return Ok(item);
    }
    let by_name: Vec<&T> = items.iter().filter(|i| i.name() == wanted).collect();
    match by_name.as_slice() {
        [one] => return Ok(one),
        [] => {}
        many => return Err(ambiguous(what, wanted, "name", many)),
    }
    let by_prefix: Vec<&T> = items
        .iter()
        .filter(|i| i.id().starts_with(wanted))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no {what} has the id, id prefix or name {wanted:?}"
        )),
        many => Err(ambiguous(what, wanted, "id prefix", many)),
    }
}

fn ambiguous<T: Named>(what: &str, wanted: &str, kind: &str, many: &[&T]) -> String {
    let listed: Vec<String> = many
        .iter()
        .take(5)
        .map(|i| format!("{} ({})", i.id(), i.name()))
        .collect();
    format!(
        "{} {what}s have the {kind} {wanted:?}: {}{}; give more of the id",
        many.len(),
        listed.join(", "),
        if many.len() > 5 { ", ..." } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(&'static str, &'static str);

    impl Named for Item {
        fn id(&self) -> String {
            self.0.to_string()
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    const ITEMS: [Item; 4] = [
        Item("6f1c2a00-0000-4000-8000-000000000001", "dev"),
        Item("6f1d9b00-0000-4000-8000-000000000002", "ci"),
        Item("a0000000-0000-4000-8000-000000000003", "ci"),
        Item("a1000000-0000-4000-8000-000000000004", "6f1c"),
    ];

    #[test]
    fn ids_names_and_prefixes_find_one() {
        let id = |w: &str| resolve(&ITEMS, w, "VM").map(|i| i.0);
        assert_eq!(id("dev"), Ok(ITEMS[0].0));
        assert_eq!(id("6f1d"), Ok(ITEMS[1].0));
        assert_eq!(id(ITEMS[2].0), Ok(ITEMS[2].0));
        // A name beats an id prefix that is also someone's name.
        assert_eq!(id("6f1c"), Ok(ITEMS[3].0));
    }

    #[test]
    fn ambiguity_and_absence_are_errors_that_say_so() {
        let err = resolve(&ITEMS, "ci", "VM").map(|i| i.0).unwrap_err();
        assert!(err.starts_with("2 VMs have the name \"ci\""), "{err}");
        assert!(
            err.contains(ITEMS[1].0) && err.contains(ITEMS[2].0),
            "{err}"
        );
        let err = resolve(&ITEMS, "6f1", "VM").map(|i| i.0).unwrap_err();
        assert!(err.contains("id prefix \"6f1\""), "{err}");
        let err = resolve(&ITEMS, "zz", "snapshot").map(|i| i.0).unwrap_err();
        assert_eq!(err, "no snapshot has the id, id prefix or name \"zz\"");
        assert!(resolve(&ITEMS, "", "VM").is_err());
    }
}
