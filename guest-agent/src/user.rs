//! Who runs a command: an image's `User` (`name`, `uid`, `name:group`,
//! `uid:gid`, ...) resolved against the guest's `/etc/passwd` and
//! `/etc/group`, as a container runtime does. A numeric user needs no
//! entry (its group is then 0 unless given); a name must have one.

/// The uid and gid `spec` names, given the texts of `/etc/passwd` and
/// `/etc/group` (empty when the image has none). `Err` says why not.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = |text: &str, name: &str| -> Option<Vec<String>> {
        text.lines()
            .map(|line| line.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|fields| fields.first().map(String::as_str) == Some(name))
    };
    let number = |field: Option<&String>| field.and_then(|f| f.parse::<u32>().ok());
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => {
            let by_uid = passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&user)).then(|| fields.get(3)?.parse::<u32>().ok())?
            });
            (uid, by_uid.unwrap_or(0))
        }
        Err(_) => {
            let fields = entry(passwd, user)
                .ok_or_else(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
            let uid = number(fields.get(2))
                .ok_or_else(|| format!("user {user:?}: its /etc/passwd entry has no uid"))?;
            (uid, number(fields.get(3)).unwrap_or(0))
        }
    };
    let gid = match group_part {
        None | Some("") => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let fields = entry(group, g)
                    .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?;
                number(fields.get(2))
                    .ok_or_else(|| format!("group {g:?}: its /etc/group entry has no gid"))?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn names_and_numbers_resolve_as_a_container_runtime_does() {
        let r = |spec| resolve(spec, PASSWD, GROUP);
        assert_eq!(r("app"), Ok((1000, 1001)));
        assert_eq!(r("app:staff"), Ok((1000, 50)));
        assert_eq!(r("1000"), Ok((1000, 1001)));
        assert_eq!(r("4242"), Ok((4242, 0)));
        assert_eq!(r("65534:65534"), Ok((65534, 65534)));
        assert_eq!(r("root:"), Ok((0, 0)));
        assert!(
            r("ghost")
                .unwrap_err()
                .contains("not in the image's /etc/passwd")
        );
        assert!(r("app:ghosts").unwrap_err().contains("/etc/group"));
        assert!(
            resolve("app", "", "").is_err(),
            "no passwd: names do not resolve"
        );
    }
}
