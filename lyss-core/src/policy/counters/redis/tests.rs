use super::*;

#[test]
fn redis_clock_skew_is_taken_from_the_middle_of_the_round_trip() {
    let before = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
    let after = before + time::Duration::milliseconds(2);
    // Redis answered 1,000.061 s: 60 ms ahead of the trip's middle (1,000.001 s).
    assert_eq!(skew_us(before, 1_000_061_000, after), 60_000);
    assert_eq!(skew_us(before, 999_000_000, after), -1_001_000);
    // Within the round trip: no skew that could be told.
    assert_eq!(skew_us(before, 1_000_000_500, after), 0);
    assert_eq!(skew_us(before, 1_000_002_000, after), 0);
}
