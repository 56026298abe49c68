use super::*;
use proptest::prelude::*;
use time::macros::datetime;

fn status(unit: Unit, limit: i64, spent: i64, reserved: i64) -> BudgetStatus {
    BudgetStatus {
        budget: Budget {
            id: "b".into(),
            scope: Scope::User,
            scope_id: "u".into(),
            scope_name: "ann".into(),
            unit,
            limit,
            period: Period::Daily,
            tz: None,
            expires_at: None,
        },
        period_start: 0,
        resets_at: Some(datetime!(2026-12-01 0:00 UTC)),
        spent,
        reserved,
    }
}

fn ask(prompt: u64, requested: Option<u32>) -> Ask {
    Ask {
        prompt_tokens: prompt,
        requested_output: requested,
        output_cap: 4096,
        price: Price::per_mtok(1.0, 2.0, 0.5),
        grows: None,
    }
}

const NOW: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

#[test]
fn sets_max_tokens_to_what_the_tightest_budget_allows() {
    // 1000 tokens left; the prompt takes 100, so 900 output tokens fit.
    let states = [
        status(Unit::Tokens, 10_000, 9_000, 0),
        status(Unit::Usd, 1_000_000_000, 0, 0),
    ];
    let a = admit(&states, &ask(100, None), NOW).unwrap();
    assert_eq!(a.set_max_tokens, Some(900));
    assert_eq!(a.amounts, vec![1000, 100 * 1000 + 900 * 2000]);
}

#[test]
fn refuses_when_not_even_a_minimal_answer_fits_and_names_the_budget() {
    let states = [status(Unit::Tokens, 1_000, 890, 0)];
    let e = admit(&states, &ask(100, None), NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("user `ann` daily budget of 1000 tokens"), "{e}");
    assert!(e.contains("resets at 2026-12-01T00:00:00Z"), "{e}");
}

#[test]
fn an_answer_that_grows_reserves_a_first_share_and_may_grow_to_what_fits() {
    let growing = |prompt, requested| Ask {
        grows: Some(FirstShare::default()),
        ..ask(prompt, requested)
    };
    // 400 tokens, 10 in the prompt: 390 could be written; 5% of that (19) is reserved.
    let states = [status(Unit::Tokens, 400, 0, 0)];
    let a = admit(&states, &growing(10, None), NOW).unwrap();
    assert_eq!(
        (a.output, a.ceiling, a.set_max_tokens),
        (19, 390, Some(390))
    );
    assert_eq!(a.amounts, vec![10 + 19]);
    // Never less than a minimal answer, never more than `tokens`.
    let tight = [status(Unit::Tokens, 400, 300, 0)];
    assert_eq!(admit(&tight, &growing(10, None), NOW).unwrap().output, 16);
    let large = [status(Unit::Tokens, 50_000, 0, 0)];
    let a = admit(&large, &growing(10, None), NOW).unwrap();
    assert_eq!((a.output, a.ceiling, a.set_max_tokens), (512, 4096, None));
    // Where the whole answer is a small share of what is left, it is reserved whole.
    let roomy = [status(Unit::Tokens, 10_000_000, 0, 0)];
    let a = admit(&roomy, &growing(10, None), NOW).unwrap();
    assert_eq!((a.output, a.ceiling), (4096, 4096));
    // An explicit cap is reserved whole: the caller asked for that much.
    let a = admit(&states, &growing(10, Some(300)), NOW).unwrap();
    assert_eq!((a.output, a.ceiling), (300, 300));
}

#[test]
fn a_top_up_grants_what_every_budget_can_still_take() {
    let price = Price::per_mtok(1.0, 2.0, 0.5); // 2,000 nano-USD per output token
    assert_eq!(grant(&[(Unit::Tokens, 100)], &price, 64), 64);
    assert_eq!(
        grant(&[(Unit::Tokens, 100), (Unit::Usd, 20_000)], &price, 64),
        10
    );
    assert_eq!(grant(&[(Unit::Tokens, 0)], &price, 64), 0);
    assert_eq!(grant(&[(Unit::Tokens, -5)], &price, 64), 0);
    assert_eq!(grant(&[], &price, 64), 64);
}

#[test]
fn an_explicit_max_tokens_that_does_not_fit_is_refused_not_cut() {
    let states = [status(Unit::Tokens, 1_000, 0, 0)];
    assert!(admit(&states, &ask(100, Some(901)), NOW).is_err());
    let a = admit(&states, &ask(100, Some(900)), NOW).unwrap();
    assert_eq!((a.output, a.set_max_tokens), (900, None));
}

#[test]
fn plenty_of_room_reserves_the_model_cap_without_touching_the_request() {
    let a = admit(
        &[status(Unit::Usd, i64::MAX / 4, 0, 0)],
        &ask(10, None),
        NOW,
    )
    .unwrap();
    assert_eq!((a.output, a.set_max_tokens), (4096, None));
    let none = admit(&[], &ask(10, None), NOW).unwrap();
    assert!(none.amounts.is_empty());
}

#[test]
fn unknown_scopes_units_and_periods_are_the_callers_error_naming_the_field() {
    for (parsed, param) in [
        (Scope::parse("team").map(|_| ()), "scope"),
        (Unit::parse("eur").map(|_| ()), "unit"),
        (Period::parse("hourly").map(|_| ()), "period"),
    ] {
        match parsed {
            Err(Error::InvalidRequest { param: Some(p), .. }) => assert_eq!(p, param),
            other => panic!("{param}: expected an invalid request, got {other:?}"),
        }
    }
    assert_eq!(Scope::parse("key").unwrap(), Scope::Key);
    assert_eq!(Unit::parse("usd").unwrap(), Unit::Usd);
}

#[test]
fn expired_budgets_admit_nothing() {
    let mut s = status(Unit::Usd, 1_000_000_000, 0, 0);
    s.budget.expires_at = Some(datetime!(2026-11-01 0:00 UTC));
    assert!(
        admit(&[s], &ask(1, Some(1)), NOW)
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
}

#[test]
fn periods_align_to_calendar_boundaries() {
    let t = datetime!(2026-11-27 23:59:59 UTC); // a Friday
    let day = |p: Period, tz| Period::bounds(p, t, tz).unwrap();
    assert_eq!(
        day(Period::Daily, None),
        (
            datetime!(2026-11-27 0:00 UTC).unix_timestamp(),
            Some(datetime!(2026-11-28 0:00 UTC).unix_timestamp())
        )
    );
    assert_eq!(
        day(Period::Weekly, None).0,
        datetime!(2026-11-23 0:00 UTC).unix_timestamp()
    );
    assert_eq!(
        day(Period::Monthly, None),
        (
            datetime!(2026-11-01 0:00 UTC).unix_timestamp(),
            Some(datetime!(2026-12-01 0:00 UTC).unix_timestamp())
        )
    );
    // In Tokyo it is already Saturday the 28th.
    assert_eq!(
        day(Period::Daily, Some("Asia/Tokyo")).0,
        datetime!(2026-11-27 15:00 UTC).unix_timestamp()
    );
    assert_eq!(day(Period::None, None), (0, None));
    assert!(Period::bounds(Period::Daily, t, Some("Mars/Olympus")).is_err());
}

proptest! {
    /// Whatever is admitted fits: spent + reserved + amount ≤ limit on every budget.
    #[test]
    fn admitted_amounts_never_exceed_any_limit(
        limits in proptest::collection::vec((0i64..10_000_000, 0i64..10_000_000, 0i64..10_000_000, any::<bool>()), 0..4),
        prompt in 0u64..100_000,
        requested in proptest::option::of(0u32..100_000),
        cap in 1u32..200_000,
        input in 0.0f64..20.0,
        output in 0.0f64..80.0,
        grows in any::<bool>(),
    ) {
        let states: Vec<_> = limits.iter().map(|&(l, s, r, usd)| {
            status(if usd { Unit::Usd } else { Unit::Tokens }, l, s.min(l), r.min(l - s.min(l)))
        }).collect();
        let a = Ask { prompt_tokens: prompt, requested_output: requested, output_cap: cap, price: Price::per_mtok(input, output, input), grows: grows.then(FirstShare::default) };
        if let Ok(adm) = admit(&states, &a, NOW) {
            for (s, amount) in states.iter().zip(&adm.amounts) {
                prop_assert!(s.spent + s.reserved + amount <= s.budget.limit);
            }
            if let Some(m) = adm.set_max_tokens {
                prop_assert!(m >= MIN_OUTPUT_TOKENS && m < cap && requested.is_none());
            }
            prop_assert!(adm.output <= adm.ceiling);
            if !grows || requested.is_some() {
                prop_assert_eq!(adm.output, adm.ceiling);
            }
        }
    }

    /// Every instant lies in exactly the period whose bounds contain it.
    #[test]
    fn a_moment_lies_inside_its_period(secs in 0i64..4_102_444_800, p in 1usize..4) {
        let period = [Period::None, Period::Daily, Period::Weekly, Period::Monthly][p];
        let now = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let (start, end) = period.bounds(now, None).unwrap();
        prop_assert!(start <= secs);
        prop_assert!(end.unwrap() > secs);
        let (next_start, _) = period.bounds(OffsetDateTime::from_unix_timestamp(end.unwrap()).unwrap(), None).unwrap();
        prop_assert_eq!(next_start, end.unwrap());
    }

    /// The same in time zones with daylight saving (30-minute shifts too) and odd offsets:
    /// periods tile time with no gap and no overlap across DST changes.
    #[test]
    fn periods_tile_time_in_any_time_zone(
        secs in 0i64..4_102_444_800,
        p in 1usize..4,
        z in 0usize..5,
    ) {
        let tz = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham"][z];
        let period = [Period::None, Period::Daily, Period::Weekly, Period::Monthly][p];
        let now = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let (start, end) = period.bounds(now, Some(tz)).unwrap();
        let end = end.unwrap();
        prop_assert!(start <= secs && secs < end, "{tz}: {start} <= {secs} < {end}");
        // A day is 23 to 25 hours long, never less or more (Lord Howe shifts by 30 minutes).
        if period == Period::Daily {
            prop_assert!((23 * 3600..=25 * 3600).contains(&(end - start)), "{tz}: {}", end - start);
        }
        let (next_start, _) = period.bounds(OffsetDateTime::from_unix_timestamp(end).unwrap(), Some(tz)).unwrap();
        prop_assert_eq!(next_start, end);
        let (same_start, _) = period.bounds(OffsetDateTime::from_unix_timestamp(end - 1).unwrap(), Some(tz)).unwrap();
        prop_assert_eq!(same_start, start);
    }
}
