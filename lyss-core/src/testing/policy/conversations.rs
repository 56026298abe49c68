//! [`crate::policy::Conversations`]: the Responses API's stored conversations.

use std::sync::Arc;

use crate::policy::Policy;

pub async fn responses_are_kept_for_their_user_only(policy: Arc<dyn Policy>) {
    let messages = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello!"}]"#;
    let response = r#"{"id":"resp_1","object":"response","status":"completed"}"#;
    policy
        .save_response("resp_1", "u-ann", messages, response)
        .await
        .expect("save");
    assert_eq!(
        policy.load_response("resp_1", "u-ann").await.expect("load"),
        messages
    );
    assert_eq!(
        policy.get_response("resp_1", "u-ann").await.expect("get"),
        response
    );
    // Another user's, or one that never was: the same not found, to read or to delete.
    for (id, user) in [("resp_1", "u-bob"), ("resp_2", "u-ann")] {
        assert!(matches!(
            policy.load_response(id, user).await,
            Err(crate::Error::NotFound(_))
        ));
        assert!(matches!(
            policy.get_response(id, user).await,
            Err(crate::Error::NotFound(_))
        ));
        assert!(matches!(
            policy.delete_response(id, user).await,
            Err(crate::Error::NotFound(_))
        ));
    }
    // An id is kept once.
    assert!(
        policy
            .save_response("resp_1", "u-ann", "[]", "{}")
            .await
            .is_err()
    );
    // Deleted: gone for every reader, and a second delete finds nothing.
    policy
        .delete_response("resp_1", "u-ann")
        .await
        .expect("delete");
    assert!(matches!(
        policy.load_response("resp_1", "u-ann").await,
        Err(crate::Error::NotFound(_))
    ));
    assert!(matches!(
        policy.get_response("resp_1", "u-ann").await,
        Err(crate::Error::NotFound(_))
    ));
    assert!(matches!(
        policy.delete_response("resp_1", "u-ann").await,
        Err(crate::Error::NotFound(_))
    ));
}
