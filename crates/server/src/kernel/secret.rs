//! Secrets never leave in text meant for people: logs, errors, `--help`, `Debug`.
//!
//! Types that carry a secret implement `Debug` by hand and print [`REDACTED`] in its place;
//! a database URL is shown through [`redact_url`].

/// What a secret prints as.
pub const REDACTED: &str = "***";

/// A database URL with its password, and any `password`, `sslpassword` or `sslkey`-style
/// secret parameter, replaced by [`REDACTED`]: safe for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL we can take apart: show its scheme at most.
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{REDACTED}"),
            None => REDACTED.to_string(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(REDACTED));
    }
    let secret_param = |k: &str| {
        let k = k.to_ascii_lowercase();
        k.contains("password") || k == "sslkey" || k.contains("secret") || k.contains("token")
    };
    if parsed.query_pairs().any(|(k, _)| secret_param(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Replaces every occurrence of the URL's password in `text` (an error from a driver that
/// quoted the URL) with [`REDACTED`].
pub fn scrub(text: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    {
        Some(p) if !p.is_empty() => {
            let decoded = percent_encoding::percent_decode_str(&p)
                .decode_utf8_lossy()
                .into_owned();
            text.replace(&p, REDACTED).replace(&decoded, REDACTED)
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_urls() {
        let r = redact_url("postgres://alice:s3cret@db.example.com:5432/app?sslmode=require");
        assert_eq!(
            r,
            "postgres://alice:***@db.example.com:5432/app?sslmode=require"
        );
        let r = redact_url("postgres://alice@db/app?password=s3cret&sslmode=verify-full");
        assert!(
            !r.contains("s3cret") && r.contains("sslmode=verify-full"),
            "{r}"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/seatkeeper/seatkeeper.db"),
            "sqlite:///var/lib/seatkeeper/seatkeeper.db"
        );
        assert!(!redact_url("postgres://a:b c@[bad").contains("b c"));
    }

    #[test]
    fn scrub_removes_a_quoted_password() {
        let url = "postgres://alice:s%40cret@db/app";
        let err = "error connecting to postgres://alice:s%40cret@db/app: password s@cret wrong";
        let out = scrub(err, url);
        assert!(
            !out.contains("s%40cret") && !out.contains("s@cret"),
            "{out}"
        );
    }
}
