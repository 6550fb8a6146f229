//! `RECONCILE.XADDSIGNED`: appends an entry signed inside Redis.

use std::ffi::c_int;

use crate::args::{parse_xadd, ErrorReply};
use crate::ffi::{self, OwnedString, RedisModuleCtx, RedisModuleString};
use crate::mac::{self, HMAC_FIELD, KID_FIELD, RESERVED_FIELDS, SIGNED_MS_FIELD};
use crate::state::{self, Stats, STATS};
use crate::stream;

pub fn xaddsigned_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    match xaddsigned(ctx, args) {
        Ok(Some(id)) => ffi::reply_bulk(ctx, id.as_bytes()),
        Ok(None) => ffi::reply_null(ctx),
        Err(e) => ffi::reply_error(ctx, &e.0),
    }
}

fn xaddsigned(
    ctx: *mut RedisModuleCtx,
    args: &[*mut RedisModuleString],
) -> Result<Option<String>, ErrorReply> {
    let words: Vec<&[u8]> = args.iter().map(|&a| ffi::bytes(a)).collect();
    let parsed = parse_xadd(&words)?;
    let (Some(settings), Some(ring)) = (state::settings(), state::keyring()) else {
        return Err(ErrorReply(
            "ERR the reconcile module is not initialised".into(),
        ));
    };
    let (Some(&name), Some(&key)) = (args.get(1), words.get(1)) else {
        return Err(ErrorReply::arity("reconcile.xaddsigned"));
    };
    let (Some(user_fields), Some(user_words)) =
        (args.get(parsed.fields_at..), words.get(parsed.fields_at..))
    else {
        return Err(ErrorReply::arity("reconcile.xaddsigned"));
    };

    if !settings.is_guard(key) {
        return Err(ErrorReply(format!(
            "ERR '{}' is not a guarded key: entries are signed only into streams named by the \
             module's guard argument",
            ffi::printable(key)
        )));
    }
    let user = ffi::current_user(ctx);
    if !settings.may_sign(user.as_deref()) {
        let who = user
            .as_deref()
            .map(ffi::printable)
            .unwrap_or_else(|| "unknown".into());
        return Err(ErrorReply(format!(
            "NOPERM user '{who}' may not sign entries: it is not in the module's signers list"
        )));
    }
    if let Some(field) = user_words
        .iter()
        .step_by(2)
        .find(|f| RESERVED_FIELDS.contains(f))
    {
        return Err(ErrorReply(format!(
            "ERR field '{}' is reserved: the module appends kid, signed_ms and hmac itself",
            ffi::printable(field)
        )));
    }

    let signer = ring.signing();
    let kid = signer.kid().as_bytes();
    let signed_ms = ffi::now_ms().to_string();
    let tag = mac::sign(signer.mac(), kid, key, signed_ms.as_bytes(), user_words);
    let appended: Vec<OwnedString> = [
        KID_FIELD,
        kid,
        SIGNED_MS_FIELD,
        signed_ms.as_bytes(),
        HMAC_FIELD,
        &tag,
    ]
    .iter()
    .filter_map(|b| OwnedString::new(b))
    .collect();
    if appended.len() != 6 {
        return Err(ErrorReply("ERR out of memory while signing".into()));
    }
    let mut fields: Vec<*mut RedisModuleString> = Vec::with_capacity(user_fields.len() + 6);
    fields.extend_from_slice(user_fields);
    fields.extend(appended.iter().map(OwnedString::as_ptr));

    let Some(done) = stream::append(
        ctx,
        name,
        parsed.id,
        &fields,
        parsed.trim,
        !parsed.nomkstream,
    )?
    else {
        return Ok(None);
    };
    stream::replicate(ctx, name, &done, &fields);
    Stats::add(&STATS.signed, 1);
    Ok(Some(done.id.to_string()))
}
