//! The routing bytes a token carries (owner, version, backups) must never panic the decoder,
//! and whatever decodes names only members, each once, and encodes back to the same bytes.
#![no_main]

use backend_instantcopy::{MAX_BACKUPS, NodeId, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&members, bytes)) = data.split_first() else {
        return;
    };
    let is_member = |n: NodeId| (1..=u16::from(members)).contains(&n.0);
    if let Ok(route) = Route::decode(bytes, is_member) {
        assert_eq!(route.encode(), bytes, "decode then encode is the identity");
        assert!(route.backups.len() <= usize::from(MAX_BACKUPS));
        let mut holders: Vec<NodeId> = route.holders().collect();
        assert!(holders.iter().all(|n| is_member(*n)), "only members");
        holders.sort_unstable();
        holders.dedup();
        assert_eq!(
            holders.len(),
            route.backups.len() + 1,
            "each holder named once"
        );
        assert!(route.same_placement(&route.clone()));
    }
});
