use super::*;

#[test]
fn a_hold_made_and_released_in_one_batch_is_neither_written_nor_deleted_twice() {
    let mut s = State::default();
    s.put_hold(HoldRow {
        reservation_id: "r".into(),
        budget_id: "b".into(),
        period_start: 0,
        amount: 10,
        expires_at: 1,
    });
    assert_eq!(s.take_hold("r", "b"), Some(10));
    assert_eq!(s.take_hold("r", "b"), None);
    assert!(s.put.is_empty());
    assert_eq!(s.gone.len(), 1);
    assert_eq!(s.add("b", 0, 3, 5), (3, 5));
    assert_eq!(s.add("b", 0, 1, -5), (4, 0));
    assert_eq!(s.dirty.len(), 1);
}
