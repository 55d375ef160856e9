//! Lab 09 (`course/labs/09-hotspot`): the parse stage classifies every event's key (service and
//! route) against a table of API prefixes. Something in here is slow: find it in the CPU
//! flamegraph, then fix it in [`student`].

use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/09-hotspot/reference.rs"]
mod reference;

/// The API prefixes, by class (index + 1); 0 = unclassified.
pub const PREFIXES: [&str; 24] = [
    "/api/v1/users",
    "/api/v1/orders",
    "/api/v1/items",
    "/api/v1/cart",
    "/api/v1/search",
    "/api/v1/login",
    "/api/v1/logout",
    "/api/v1/payments",
    "/api/v2/users",
    "/api/v2/orders",
    "/api/v2/items",
    "/api/v2/cart",
    "/api/v2/search",
    "/health",
    "/metrics",
    "/static",
    "/assets",
    "/checkout",
    "/account",
    "/admin",
    "/internal",
    "/graphql",
    "/rpc",
    "/",
];

/// Called for every parsed event by the parse stage (do not edit).
pub fn route_class(imp: LabImpl, key: &[u8]) -> u8 {
    match imp {
        LabImpl::Baseline => baseline(key),
        LabImpl::Student => student(key),
        LabImpl::Mutant(n) => mutants!(n, |m| m(key)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::route_class(key),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(key),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(key: &[u8]) -> u8 {
    super::baseline_mark();
    let table: Vec<String> = PREFIXES.iter().map(|p| p.to_lowercase()).collect();
    let key = String::from_utf8_lossy(key).to_lowercase();
    table
        .iter()
        .position(|p| key.contains(p.as_str()))
        .map_or(0, |i| (i + 1) as u8)
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/hotspot.rs");

// ===== STUDENT (lab 09: same answer, without the hot spot) =====
#[inline(never)]
fn student(key: &[u8]) -> u8 {
    let table: Vec<String> = PREFIXES.iter().map(|p| p.to_lowercase()).collect();
    let key = String::from_utf8_lossy(key).to_lowercase();
    table
        .iter()
        .position(|p| key.contains(p.as_str()))
        .map_or(0, |i| (i + 1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_classifies_alike() {
        let keys: [&[u8]; 6] = [
            b"checkout\x00/api/v1/orders/42",
            b"search\x00/api/v2/search",
            b"web\x00/static/app.js",
            b"web\x00/",
            b"x\x00nothing",
            b"",
        ];
        for key in keys {
            let want = baseline(key);
            assert_eq!(route_class(LabImpl::Student, key), want, "{key:?}");
            assert_eq!(route_class(LabImpl::Reference, key), want, "{key:?}");
        }
        assert_eq!(baseline(b"x\x00/api/v1/orders/42"), 2);
        assert_eq!(baseline(b"nothing"), 0);
    }
}
