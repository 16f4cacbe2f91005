import Foundation

/// Colors for the semantic roles. A theme file has `role = #rrggbb` lines
/// (`graph.low = #3a7d44`); `#` starts a comment; unknown keys are ignored, so
/// an old console reads a newer theme. `monochrome = true` means attributes only.
package struct Theme: Sendable, Equatable {
    package var name: String
    package var colors: [Role: RGB]
    package var monochrome: Bool

    package struct RGB: Sendable, Equatable {
        package var r: UInt8, g: UInt8, b: UInt8
        package init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
            self.r = r
            self.g = g
            self.b = b
        }

        init?(hex: String) {
            let digits = hex.hasPrefix("#") ? hex.dropFirst() : Substring(hex)
            guard digits.count == 6, let v = UInt32(digits, radix: 16) else { return nil }
            self.init(UInt8(v >> 16), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF))
        }
    }

    /// The built-in default, used for roles a theme file leaves out.
    package static let builtIn = Theme(name: "default", colors: [
        .text: RGB(0xd0, 0xd0, 0xd0), .dim: RGB(0x80, 0x80, 0x80), .title: RGB(0x5f, 0xaf, 0xff), .border: RGB(0x4e, 0x4e, 0x4e),
        .value: RGB(0xff, 0xff, 0xff), .accent: RGB(0xaf, 0x87, 0xff), .ok: RGB(0x5f, 0xd7, 0x5f), .warn: RGB(0xff, 0xaf, 0x00),
        .error: RGB(0xff, 0x5f, 0x5f), .selected: RGB(0xff, 0xd7, 0x00), .status: RGB(0x87, 0xd7, 0xff),
        .graphLow: RGB(0x5f, 0xaf, 0x5f), .graphMid: RGB(0xd7, 0xaf, 0x00), .graphHigh: RGB(0xd7, 0x5f, 0x5f),
    ], monochrome: false)

    /// Reads a theme file's text over the built-in defaults.
    package static func parse(_ text: String, name: String) -> Theme {
        var theme = builtIn
        theme.name = name
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if key == "monochrome" {
                theme.monochrome = value == "true"
            } else if let role = Role(rawValue: key), let rgb = RGB(hex: value) {
                theme.colors[role] = rgb
            }
        }
        return theme
    }

    /// `themes/NAME.theme` from the first folder that has it.
    package static func load(_ name: String, folders: [URL]) throws -> Theme {
        for folder in folders {
            let url = folder.appendingPathComponent("\(name).theme")
            if let text = try? String(contentsOf: url, encoding: .utf8) { return parse(text, name: name) }
        }
        if name == "default" { return builtIn }
        let known = folders.flatMap { (try? FileManager.default.contentsOfDirectory(atPath: $0.path)) ?? [] }
            .filter { $0.hasSuffix(".theme") }.map { String($0.dropLast(6)) }
        throw ConsoleError("no theme \"\(name)\"; themes here: \(Set(known).sorted().joined(separator: ", "))")
    }

    /// The nearest of the xterm 256-color palette (the 6×6×6 cube or the gray ramp).
    package static func xterm256(_ c: RGB) -> Int16 {
        func level(_ v: UInt8) -> Int { v < 48 ? 0 : v < 115 ? 1 : (Int(v) - 35) / 40 }
        let r = level(c.r), g = level(c.g), b = level(c.b)
        let cube = 16 + 36 * r + 6 * g + b
        let steps = [0, 95, 135, 175, 215, 255]
        let cubeDistance = sq(Int(c.r) - steps[r]) + sq(Int(c.g) - steps[g]) + sq(Int(c.b) - steps[b])
        let mean = (Int(c.r) + Int(c.g) + Int(c.b)) / 3
        let grayIndex = max(0, min(23, (mean - 3) / 10))
        let gray = 8 + 10 * grayIndex
        let grayDistance = sq(Int(c.r) - gray) + sq(Int(c.g) - gray) + sq(Int(c.b) - gray)
        return Int16(grayDistance < cubeDistance ? 232 + grayIndex : cube)
    }

    /// The nearest of the 8 basic colors (for 8/16-color terminals).
    package static func basic8(_ c: RGB) -> Int16 {
        let bits = (c.r > 127 ? 1 : 0) | (c.g > 127 ? 2 : 0) | (c.b > 127 ? 4 : 0)
        if bits == 0 && (Int(c.r) + Int(c.g) + Int(c.b)) > 150 { return 7 }  // mid gray reads as white on dark
        return Int16(bits)
    }
}

private func sq(_ x: Int) -> Int { x * x }

/// A console error in words for the operator.
package struct ConsoleError: Error, Sendable, CustomStringConvertible {
    package var description: String
    package init(_ message: String) { description = message }
}
