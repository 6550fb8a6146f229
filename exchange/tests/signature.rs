//! The request signature against the worked example in the exchange's API documentation.

use reconcile_exchange::{sign, Credentials};

const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const DOC_QUERY: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1\
                         &recvWindow=5000&timestamp=1499827319559";
// Checked independently with `openssl dgst -sha256 -hmac`.
const DOC_SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";

#[test]
fn documented_example_signature_matches() {
    assert_eq!(sign(DOC_SECRET.as_bytes(), DOC_QUERY), DOC_SIGNATURE);
    let creds = Credentials::new("doc-key", DOC_SECRET).unwrap();
    assert_eq!(creds.sign(DOC_QUERY), DOC_SIGNATURE);
    assert!(creds.verify(DOC_QUERY, DOC_SIGNATURE));
}

#[test]
fn any_change_to_the_query_changes_the_signature() {
    let tampered = DOC_QUERY.replace("quantity=1", "quantity=2");
    assert_ne!(sign(DOC_SECRET.as_bytes(), &tampered), DOC_SIGNATURE);
    let creds = Credentials::new("doc-key", DOC_SECRET).unwrap();
    assert!(!creds.verify(&tampered, DOC_SIGNATURE));
}
