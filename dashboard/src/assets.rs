//! The page's files, compiled into the binary: the dashboard needs no
//! network and no build step beyond `cargo build` (docs/dashboard.md).

const INDEX: &str = include_str!("../assets/index.html");
const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/app.js");

/// The content type and body of the page's file `name`.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "style.css" => Some(("text/css; charset=utf-8", STYLE)),
        "app.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        _ => None,
    }
}
