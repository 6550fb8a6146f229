//! `RECONCILE.XADDSIGNED`: appends an entry signed inside Redis.

use std::ffi::c_int;
use std::ptr;
use std::sync::OnceLock;

use redis_module::raw;

use crate::args::{parse_xadd, ErrorReply, StreamId};
use crate::ffi::{self, OwnedString, RedisModuleCtx, RedisModuleString, Scratch, SharedString};
use crate::mac::{self, HMAC_FIELD, KID_FIELD, RESERVED_FIELDS, SIGNED_MS_FIELD};
use crate::propagation;
use crate::state::{self, Stats, STATS};
use crate::stream;

/// Argument lists up to this length are kept on the stack: a plan with a trim option takes
/// about 36, the trailer included. Longer ones go to the heap.
const INLINE_ARGS: usize = 48;

/// The names of the three fields the module appends, created once.
fn appended_names() -> Option<&'static [SharedString; 3]> {
    static NAMES: OnceLock<Option<[SharedString; 3]>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            Some([
                SharedString::new(KID_FIELD)?,
                SharedString::new(SIGNED_MS_FIELD)?,
                SharedString::new(HMAC_FIELD)?,
            ])
        })
        .as_ref()
}

pub fn xaddsigned_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    // A master replicates its appends as RECONCILE.XADDREPL. Signing again here would give the
    // replica an entry of its own, with its own clock and ID.
    let context = ffi::context_flags(ctx);
    if context & raw::REDISMODULE_CTX_FLAGS_REPLICATED != 0 {
        return ffi::reply_error(
            ctx,
            "ERR RECONCILE.XADDSIGNED is not applied from a master: signed entries replicate \
             as RECONCILE.XADDREPL",
        );
    }
    let args = ffi::argv_slice(argv, argc);
    match xaddsigned(ctx, context, args) {
        Ok(Some(id)) => ffi::reply_bulk(ctx, id.text().as_bytes()),
        Ok(None) => ffi::reply_null(ctx),
        Err(e) => ffi::reply_error(ctx, &e.0),
    }
}

fn xaddsigned(
    ctx: *mut RedisModuleCtx,
    context: u32,
    args: &[*mut RedisModuleString],
) -> Result<Option<StreamId>, ErrorReply> {
    let mut words = Scratch::<&[u8], INLINE_ARGS>::new(&[], args.len());
    for (word, &arg) in words.as_mut_slice().iter_mut().zip(args) {
        *word = ffi::bytes(arg);
    }
    let words = words.as_slice();
    let parsed = parse_xadd(words)?;
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
    // Looking the user up costs a string per call, so only when a signers list is set.
    let user = settings
        .signers
        .as_ref()
        .and_then(|_| ffi::current_user(ctx));
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
    let mut clock = itoa::Buffer::new();
    let signed_ms = clock.format(ffi::now_ms()).as_bytes();
    let tag = mac::sign(signer.mac(), kid, key, signed_ms, user_words);
    let (
        Some([kid_name, signed_ms_name, hmac_name]),
        Some(kid_value),
        Some(signed_ms_value),
        Some(hmac_value),
    ) = (
        appended_names(),
        OwnedString::new(kid),
        OwnedString::new(signed_ms),
        OwnedString::new(&tag),
    )
    else {
        return Err(ErrorReply("ERR out of memory while signing".into()));
    };
    let trailer = [
        kid_name.as_ptr(),
        kid_value.as_ptr(),
        signed_ms_name.as_ptr(),
        signed_ms_value.as_ptr(),
        hmac_name.as_ptr(),
        hmac_value.as_ptr(),
    ];
    let mut fields = Scratch::<_, INLINE_ARGS>::new(ptr::null_mut(), user_fields.len() + 6);
    let (user_part, trailer_part) = fields.as_mut_slice().split_at_mut(user_fields.len());
    user_part.copy_from_slice(user_fields);
    trailer_part.copy_from_slice(&trailer);
    let fields = fields.as_slice();

    let Some(done) = stream::append(
        ctx,
        name,
        parsed.id,
        fields,
        parsed.trim,
        !parsed.nomkstream,
    )?
    else {
        return Ok(None);
    };
    if propagation::count_if_unheard(ctx, context) {
        Stats::add(&STATS.signed_unpropagated, 1);
    } else {
        stream::replicate(ctx, name, &done, fields);
    }
    Stats::add(&STATS.signed, 1);
    Ok(Some(done.id))
}
