//! Ansible host ranges: `node[01:20]`, `node[a:f]`, `web[1:10:2]`.

/// The most hosts one pattern may expand to (the inventory's own limits are tighter in total:
/// see [`super::MAX_HOSTS`] and [`super::MAX_HOST_ENTRIES`]).
pub const MAX_EXPANSION: usize = super::MAX_HOSTS;

/// The most `[a:b]` ranges one host name may hold.
pub const MAX_RANGES: usize = 8;

/// Expand one Ansible host range in a host name; a name without `[` is returned as is.
pub fn expand(name: &str) -> Result<Vec<String>, String> {
    expand_at_most(name, MAX_EXPANSION)
}

/// [`expand`], failing as soon as more than `limit` names would be produced, so a hostile
/// pattern costs no more than `limit` strings.
pub fn expand_at_most(name: &str, limit: usize) -> Result<Vec<String>, String> {
    let Some(open) = name.find('[') else {
        return Ok(vec![name.to_owned()]);
    };
    if name.matches('[').count() > MAX_RANGES {
        return Err(format!(
            "host name `{name}` has more than {MAX_RANGES} ranges"
        ));
    }
    let close = name[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("host range `{name}` has no closing `]`"))?;
    let (head, range, tail) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    let parts: Vec<&str> = range.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [a, b] => (*a, *b, 1usize),
        [a, b, s] => (
            *a,
            *b,
            s.parse::<usize>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("host range `{name}` has a bad step `{s}`"))?,
        ),
        _ => {
            return Err(format!(
                "host range `{name}` must look like [start:end] or [start:end:step]"
            ));
        }
    };
    let tails = expand_at_most(tail, limit)?;
    let mut out = Vec::new();
    let mut push = |item: String| -> Result<(), String> {
        for t in &tails {
            if out.len() >= limit {
                return Err(format!(
                    "host range `{name}` expands to more than {limit} hosts"
                ));
            }
            out.push(format!("{head}{item}{t}"));
        }
        Ok(())
    };
    if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return Err(format!("host range `{name}` runs backwards"));
        }
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        let mut i = a;
        while i <= b {
            push(format!("{i:0width$}"))?;
            i = match i.checked_add(step as u64) {
                Some(n) => n,
                None => break,
            };
        }
        return Ok(out);
    }
    let single = |s: &str| {
        let mut c = s.chars();
        match (c.next(), c.next()) {
            (Some(ch), None) if ch.is_ascii_alphabetic() => Some(ch),
            _ => None,
        }
    };
    match (single(start), single(end)) {
        (Some(a), Some(b)) if a <= b => {
            for ch in (a..=b).step_by(step) {
                push(ch.to_string())?;
            }
            Ok(out)
        }
        _ => Err(format!(
            "host range `{name}`: `{start}` and `{end}` must both be numbers or both single letters, in order"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn numeric_and_padded_and_alpha() {
        assert_eq!(expand("n[1:3]").unwrap(), ["n1", "n2", "n3"]);
        assert_eq!(expand("n[08:10].x").unwrap(), ["n08.x", "n09.x", "n10.x"]);
        assert_eq!(expand("n[a:c]").unwrap(), ["na", "nb", "nc"]);
        assert_eq!(expand("n[0:4:2]").unwrap(), ["n0", "n2", "n4"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(expand("n[3:1]").is_err());
        assert!(expand("n[1:").is_err());
        assert!(expand("n[a:9]").is_err());
        assert!(expand("n[0:999999999]").is_err());
        assert!(expand("n[1:2:0]").is_err());
    }
}
