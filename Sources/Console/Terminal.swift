import CNcurses
import Foundation

/// The one thread that talks to ncurses goes through this: start, draw a
/// canvas (one flush per frame), read keys, end. Colors come from the theme,
/// mapped to what the terminal has (256, 8/16 or none); NO_COLOR and mono
/// themes use bold and reverse video instead.
///
/// Safety: ncurses is not thread-safe; only the console's UI thread uses this.
final class Terminal {
    let unicode: Bool
    /// stdscr, as `initscr` returned it (the global is not concurrency-safe to name).
    private let window: UnsafeMutablePointer<WINDOW>!
    private let colors: Bool
    private let monochrome: Bool

    init(theme: Theme, environment: [String: String] = ProcessInfo.processInfo.environment) {
        setlocale(LC_ALL, "")
        let codeset = String(cString: nl_langinfo(nl_item(CODESET)))
        unicode = codeset.uppercased().replacingOccurrences(of: "-", with: "") == "UTF8"
        window = initscr()
        cbreak()
        noecho()
        keypad(window, true)
        curs_set(0)
        wtimeout(window, 50)  // key reads wait at most 50 ms, so snapshots show promptly
        set_escdelay(25)
        monochrome = theme.monochrome || environment["NO_COLOR"].map { !$0.isEmpty } == true
        colors = !monochrome && has_colors()
        if colors {
            start_color()
            use_default_colors()
            let many = tigetnum("colors") >= 256  // COLORS, read through a function (the global is not concurrency-safe)
            for (i, role) in Role.allCases.enumerated() {
                let rgb = theme.colors[role] ?? Theme.builtIn.colors[role]!
                init_pair(Int16(i + 1), many ? Theme.xterm256(rgb) : Theme.basic8(rgb), -1)
            }
        }
    }

    func end() { endwin() }

    var size: (width: Int, height: Int) { (Int(getmaxx(window)), Int(getmaxy(window))) }

    private static let bold: Int32 = 1 << (13 + 8)
    private static let reverse: Int32 = 1 << (10 + 8)
    private static let dim: Int32 = 1 << (12 + 8)

    private func attributes(_ role: Role) -> Int32 {
        if colors {
            let pair = Int32(Role.allCases.firstIndex(of: role)! + 1) << 8
            switch role {
            case .title, .value, .selected, .error: return pair | Self.bold
            default: return pair
            }
        }
        switch role {
        case .title, .value, .error, .warn: return Self.bold
        case .selected: return Self.reverse
        case .dim, .border: return Self.dim
        default: return 0
        }
    }

    func draw(_ canvas: Canvas) {
        werase(window)
        for y in 0..<canvas.height {
            for run in canvas.runs(y) {
                // The bottom-right cell would scroll the screen: leave it.
                var text = run.text
                if y == canvas.height - 1 && run.x + text.count >= canvas.width { text = String(text.prefix(max(0, canvas.width - run.x - 1))) }
                let attrs = attributes(run.role)
                wattr_on(window, attr_t(UInt32(bitPattern: attrs)), nil)
                mvwaddstr(window, Int32(y), Int32(run.x), text)
                wattr_off(window, attr_t(UInt32(bitPattern: attrs)), nil)
            }
        }
        wrefresh(window)
    }

    /// The next key, or nil after 50 ms without one.
    func key() -> Key? {
        let code = wgetch(window)
        switch code {
        case ERR: return nil
        case 0o403: return .up
        case 0o402: return .down
        case 0o404: return .left
        case 0o405: return .right
        case 0o632: return .resize
        case 0o523: return .pageUp
        case 0o522: return .pageDown
        case 0o406: return .home
        case 0o550: return .end
        case 0o407, 127, 8: return .backspace
        case 9: return .tab
        case 10, 13, 0o527: return .enter
        case 27:
            // An arrow key's escape sequence split over a slow link arrives as ESC, then "[A" (or
            // "OA") a little later: read it as the arrow, not as Esc followed by two characters.
            wtimeout(window, 150)  // a slow link's split, not a person's next key
            let next = wgetch(window)
            wtimeout(window, 50)
            guard next == 0x5B || next == 0x4F else {
                if next != ERR { ungetch(next) }
                return .escape
            }
            switch wgetch(window) {
            case 0x41: return .up
            case 0x42: return .down
            case 0x43: return .right
            case 0x44: return .left
            case 0x48: return .home  // ESC [ H
            case 0x46: return .end  // ESC [ F
            case let digit where (0x31...0x36).contains(digit):  // ESC [ 1~ Home, 4~ End, 5~ PgUp, 6~ PgDn
                guard wgetch(window) == 0x7E else { return nil }
                switch digit {
                case 0x31: return .home
                case 0x34: return .end
                case 0x35: return .pageUp
                case 0x36: return .pageDown
                default: return nil
                }
            default: return nil  // another sequence: dropped whole
            }
        case 0..<128: return .character(Character(Unicode.Scalar(UInt8(code))))
        default: return nil
        }
    }
}
