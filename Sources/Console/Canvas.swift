/// What a cell means, not its color: the theme maps roles to colors (htop's
/// `CRT_colors[ROLE]`, btop's theme keys). Raw values are the theme file keys.
package enum Role: String, CaseIterable, Sendable {
    case text, dim, title, border, value, accent, ok, warn, error, selected, status
    case graphLow = "graph.low", graphMid = "graph.mid", graphHigh = "graph.high"
}

/// A frame drawn off screen: a grid of characters, each with a role. Screens
/// draw into it; the terminal flushes it once per frame; tests compare its text
/// to golden strings. One character per column (no double-width glyphs).
package struct Canvas: Sendable {
    package struct Cell: Sendable, Equatable {
        package var character: Character
        package var role: Role
    }

    package let width: Int
    package let height: Int
    package private(set) var cells: [Cell]
    /// Box-drawing and block characters when true; ASCII when the locale is not UTF-8.
    package let unicode: Bool

    package init(width: Int, height: Int, unicode: Bool = true) {
        self.width = max(0, width)
        self.height = max(0, height)
        self.unicode = unicode
        cells = Array(repeating: Cell(character: " ", role: .text), count: self.width * self.height)
    }

    /// Writes `text` from column `x` of row `y`, clipped to the canvas and to `limit` columns.
    package mutating func put(_ x: Int, _ y: Int, _ text: String, _ role: Role = .text, limit: Int? = nil) {
        guard y >= 0, y < height else { return }
        var column = x
        let end = min(width, limit.map { x + $0 } ?? width)
        for character in text {
            if column >= end { break }
            if column >= 0 { cells[y * width + column] = Cell(character: character, role: role) }
            column += 1
        }
    }

    /// Sets the role of `count` cells from (x, y), keeping their characters.
    package mutating func paint(_ x: Int, _ y: Int, _ count: Int, _ role: Role) {
        guard y >= 0, y < height else { return }
        for column in max(0, x)..<min(width, x + count) { cells[y * width + column].role = role }
    }

    /// A frame with `title` in its top edge.
    package mutating func box(x: Int, y: Int, width w: Int, height h: Int, title: String = "", role: Role = .border, titleRole: Role = .title) {
        guard w >= 2, h >= 2 else { return }
        let (h0, v0, tl, tr, bl, br) = unicode ? ("─", "│", "┌", "┐", "└", "┘") : ("-", "|", "+", "+", "+", "+")
        put(x, y, tl + String(repeating: h0, count: w - 2) + tr, role)
        for row in (y + 1)..<(y + h - 1) {
            put(x, row, v0, role)
            put(x + w - 1, row, v0, role)
        }
        put(x, y + h - 1, bl + String(repeating: h0, count: w - 2) + br, role)
        if !title.isEmpty { put(x + 2, y, " \(title) ", titleRole, limit: w - 4) }
    }

    /// Row `y` as runs of one role each, for the terminal.
    package func runs(_ y: Int) -> [(x: Int, text: String, role: Role)] {
        var out: [(Int, String, Role)] = []
        var start = 0
        var text = ""
        var role = cells[y * width].role
        for x in 0..<width {
            let cell = cells[y * width + x]
            if cell.role != role {
                out.append((start, text, role))
                start = x
                text = ""
                role = cell.role
            }
            text.append(cell.character)
        }
        out.append((start, text, role))
        return out
    }

    /// The characters, one line per row, trailing spaces kept (golden tests).
    package var text: String {
        (0..<height).map { y in String(cells[(y * width)..<((y + 1) * width)].map(\.character)) }.joined(separator: "\n")
    }
}

/// The eight bar heights, lowest first, in Unicode blocks or ASCII.
func sparkLevels(unicode: Bool) -> [Character] {
    unicode ? ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"] : ["_", ".", ",", "-", "=", "+", "*", "#"]
}

/// A sparkline: the last `width` values scaled to the largest of them (or `ceiling`).
package func sparkline(_ values: [Double], width: Int, unicode: Bool, ceiling: Double? = nil) -> String {
    let levels = sparkLevels(unicode: unicode)
    let shown = values.suffix(width)
    let top = ceiling ?? (shown.max() ?? 0)
    var out = String(repeating: " ", count: max(0, width - shown.count))
    for v in shown {
        guard v.isFinite, v > 0, top > 0 else {
            out.append(unicode ? " " : " ")
            continue
        }
        out.append(levels[min(levels.count - 1, Int((v / top) * Double(levels.count - 1) + 0.5))])
    }
    return out
}

/// `sparkline` over `rows` rows (top row first): each row holds 1/rows of the height, so a taller
/// panel shows more detail. One row is the plain sparkline.
package func sparkRows(_ values: [Double], width: Int, rows: Int, unicode: Bool, ceiling: Double? = nil) -> [String] {
    guard rows > 1 else { return [sparkline(values, width: width, unicode: unicode, ceiling: ceiling)] }
    let levels = sparkLevels(unicode: unicode)
    let shown = values.suffix(width)
    let top = ceiling ?? (shown.max() ?? 0)
    let pad = String(repeating: " ", count: max(0, width - shown.count))
    return (0..<rows).map { r in
        var line = pad
        for v in shown {
            let filled = v.isFinite && v > 0 && top > 0 ? min(1, v / top) * Double(rows) : 0
            let fromBottom = Double(rows - 1 - r)
            if filled >= fromBottom + 1 {
                line.append(levels[levels.count - 1])
            } else if filled > fromBottom {
                line.append(levels[min(levels.count - 1, Int(((filled - fromBottom) * Double(levels.count - 1)).rounded()))])
            } else {
                line.append(" ")
            }
        }
        return line
    }
}
