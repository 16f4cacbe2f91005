import Foundation

/// When a batch job runs by itself: a fixed interval ("every 15m") or a
/// 5-field cron expression ("0 2 * * *", local time).
///
/// Interval slots are whole multiples of the interval since the Unix epoch,
/// so "every 15m" fires at :00, :15, :30 and :45 whenever the process started,
/// and "every 1h" on the hour (UTC).
///
/// Missed slots (the process was down): at start, if at least one slot passed
/// since the last scheduled run the ledger knows of, one catch-up run is queued
/// for the latest missed slot — one run, not one per missed slot, like
/// anacron. A job that never ran on its schedule waits for its next slot.
package enum Schedule: Sendable, Equatable, CustomStringConvertible {
    case every(seconds: Int)
    case cron(CronExpression)

    /// Parses "every 15m", "every 90s", "every 2h", "every 1d", or "15m".
    package static func interval(_ text: String) throws(ScheduleError) -> Schedule {
        var rest = text.trimmingCharacters(in: .whitespaces).lowercased()
        if rest.hasPrefix("every") { rest = rest.dropFirst(5).trimmingCharacters(in: .whitespaces) }
        let units: [(String, Int)] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        guard let unit = units.first(where: { rest.hasSuffix($0.0) }),
              let count = Int(rest.dropLast(unit.0.count).trimmingCharacters(in: .whitespaces)), count > 0, count <= 366 * 86_400 / unit.1
        else {
            throw ScheduleError("cannot read the interval \"\(text)\"; write it like \"every 15m\" (units s, m, h, d)")
        }
        return .every(seconds: count * unit.1)
    }

    /// The first slot strictly after `date`.
    package func next(after date: Date, calendar: Calendar = .current) -> Date {
        switch self {
        case .every(let seconds):
            let t = date.timeIntervalSince1970
            return Date(timeIntervalSince1970: (floor(t / Double(seconds)) + 1) * Double(seconds))
        case .cron(let expression):
            return expression.next(after: date, calendar: calendar) ?? .distantFuture
        }
    }

    /// The latest slot at or before `now` and after `last`, and how many slots
    /// were in that span (capped at `cap`), for the missed-schedule policy.
    package func missed(since last: Date, now: Date, cap: Int = 10_000, calendar: Calendar = .current) -> (latest: Date, count: Int)? {
        var slot = next(after: last, calendar: calendar)
        var latest: Date?
        var count = 0
        while slot <= now && count < cap {
            latest = slot
            count += 1
            slot = next(after: slot, calendar: calendar)
        }
        return latest.map { ($0, count) }
    }

    package var description: String {
        switch self {
        case .every(let seconds):
            for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] where seconds % size == 0 {
                return "every \(seconds / size)\(unit)"
            }
            return "every \(seconds)s"
        case .cron(let expression): return "cron \"\(expression.text)\""
        }
    }
}

package struct ScheduleError: Error, Sendable, CustomStringConvertible {
    package var description: String
    init(_ message: String) { description = message }
}

/// A 5-field cron expression: minute hour day-of-month month day-of-week.
/// Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
/// comma list of those; months and weekdays also by name (jan, mon); weekday 0
/// and 7 are Sunday. When both day fields are restricted a day matching either
/// runs (the Vixie cron rule). `@hourly`, `@daily`, `@weekly`, `@monthly`,
/// `@yearly` are accepted.
package struct CronExpression: Sendable, Equatable {
    package let text: String
    let minutes: UInt64
    let hours: UInt64
    let daysOfMonth: UInt64
    let months: UInt64
    let daysOfWeek: UInt64
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    private static let macros = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]
    private static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    package init(_ text: String) throws(ScheduleError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        self.text = trimmed
        let expanded = Self.macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ScheduleError(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), \"\(text)\" has \(fields.count); example: \"0 2 * * *\" is 02:00 every day")
        }
        minutes = try Self.field(fields[0], name: "minute", 0...59, names: [])
        hours = try Self.field(fields[1], name: "hour", 0...23, names: [])
        daysOfMonth = try Self.field(fields[2], name: "day-of-month", 1...31, names: [])
        months = try Self.field(fields[3], name: "month", 1...12, names: Self.monthNames, firstName: 1)
        var dow = try Self.field(fields[4], name: "day-of-week", 0...7, names: Self.dayNames)
        if dow & (1 << 7) != 0 { dow |= 1 }  // 7 is Sunday too
        daysOfWeek = dow & 0x7F
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
    }

    /// One field as a bit set of the values it allows.
    private static func field(_ text: String, name: String, _ range: ClosedRange<Int>, names: [String], firstName: Int = 0) throws(ScheduleError) -> UInt64 {
        func value(_ word: Substring) throws(ScheduleError) -> Int {
            if let n = Int(word) {
                guard range.contains(n) else {
                    throw ScheduleError("cron \(name) field: \(n) is out of range \(range.lowerBound)-\(range.upperBound)")
                }
                return n
            }
            if let index = names.firstIndex(of: word.lowercased()) { return index + firstName }
            throw ScheduleError("cron \(name) field: cannot read \"\(word)\"" + (names.isEmpty ? "" : " (names like \(names[0]) are allowed)"))
        }
        var bits: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, !parts[0].isEmpty else { throw ScheduleError("cron \(name) field: cannot read \"\(item)\"") }
            var step = 1
            if parts.count == 2 {
                guard let s = Int(parts[1]), s > 0 else { throw ScheduleError("cron \(name) field: the step in \"\(item)\" must be a positive number") }
                step = s
            }
            var low: Int, high: Int
            if parts[0] == "*" {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let dash = parts[0].firstIndex(of: "-") {
                low = try value(parts[0][..<dash])
                high = try value(parts[0][parts[0].index(after: dash)...])
                guard low <= high else { throw ScheduleError("cron \(name) field: the range \"\(parts[0])\" runs backwards") }
            } else {
                low = try value(parts[0])
                high = parts.count == 2 ? range.upperBound : low  // "5/15" means 5-max/15
            }
            for v in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(v) }
        }
        return bits
    }

    func matchesDay(dayOfMonth: Int, month: Int, weekday: Int) -> Bool {
        guard months & (1 << UInt64(month)) != 0 else { return false }
        let dom = daysOfMonth & (1 << UInt64(dayOfMonth)) != 0
        let dow = daysOfWeek & (1 << UInt64(weekday)) != 0
        if dayOfMonthRestricted && dayOfWeekRestricted { return dom || dow }
        return dom && dow
    }

    /// The first matching minute strictly after `date`, within about five years.
    package func next(after date: Date, calendar: Calendar) -> Date? {
        var c = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        c.second = 0
        guard var t = calendar.date(from: c).flatMap({ calendar.date(byAdding: .minute, value: 1, to: $0) }) else { return nil }
        let limit = date.addingTimeInterval(5 * 366 * 86_400)
        while t < limit {
            let p = calendar.dateComponents([.month, .day, .hour, .minute, .weekday], from: t)
            let weekday = p.weekday! - 1  // Calendar: 1 = Sunday
            if !matchesDay(dayOfMonth: p.day!, month: p.month!, weekday: weekday) {
                // Next day at 00:00.
                guard let day = calendar.date(byAdding: .day, value: 1, to: calendar.startOfDay(for: t)) else { return nil }
                t = day
                continue
            }
            if hours & (1 << UInt64(p.hour!)) == 0 {
                var h = calendar.dateComponents([.year, .month, .day, .hour], from: t)
                h.minute = 0
                guard let hour = calendar.date(from: h), let nextHour = calendar.date(byAdding: .hour, value: 1, to: hour) else { return nil }
                t = nextHour
                continue
            }
            if minutes & (1 << UInt64(p.minute!)) == 0 {
                guard let minute = calendar.date(byAdding: .minute, value: 1, to: t) else { return nil }
                t = minute
                continue
            }
            return t
        }
        return nil
    }
}
