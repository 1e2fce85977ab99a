package dmp.fhir;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * Validates FHIR R4 JSON resources against the base R4 specification, offline.
 *
 * <p>No argument: reads one JSON resource per line on stdin and writes one JSON line per input,
 * {"errors": [{"severity", "location", "message"}], "warnings": N}, only error and fatal issues
 * listed. With FILE arguments: the same line per file (with "file" first), exit 1 on any error.
 *
 * <p>Code systems the base specification does not carry (LOINC, SNOMED CT, French urn:oid
 * systems) cannot be checked without a terminology server: UnknownCodeSystemWarningValidationSupport
 * makes them a warning rather than an error, whatever the binding strength.
 */
public final class Validate {
  /** -Ddmp.fhir.verbose=true: every issue, warnings and information too, on stderr. */
  private static final boolean VERBOSE = Boolean.getBoolean("dmp.fhir.verbose");

  private Validate() {}

  static FhirValidator validator() {
    FhirContext context = FhirContext.forR4();
    ValidationSupportChain chain =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(context),
            new CommonCodeSystemsTerminologyService(context),
            new InMemoryTerminologyServerValidationSupport(context),
            new SnapshotGeneratingValidationSupport(context));
    // -Ddmp.fhir.unknownCodeSystems=hapi leaves HAPI's own handling, to compare.
    if (!"hapi".equals(System.getProperty("dmp.fhir.unknownCodeSystems"))) {
      UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
          new UnknownCodeSystemWarningValidationSupport(context);
      unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
      chain.addValidationSupport(unknownCodeSystems);
    }
    FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
    instanceValidator.setAnyExtensionsAllowed(true);
    FhirValidator validator = context.newValidator();
    validator.registerValidatorModule(instanceValidator);
    return validator;
  }

  static String report(FhirValidator validator, String json) {
    StringBuilder errors = new StringBuilder();
    int warnings = 0;
    try {
      ValidationResult result = validator.validateWithResult(json);
      for (SingleValidationMessage message : result.getMessages()) {
        ResultSeverityEnum severity = message.getSeverity();
        if (VERBOSE) {
          System.err.println(
              severity.getCode() + " " + message.getLocationString() + " ["
                  + message.getMessageId() + "] " + message.getMessage());
        }
        if (severity == ResultSeverityEnum.WARNING) {
          warnings++;
        } else if (severity == ResultSeverityEnum.ERROR || severity == ResultSeverityEnum.FATAL) {
          error(errors, severity.getCode(), message.getLocationString(), message.getMessage());
        }
      }
    } catch (RuntimeException e) {
      error(errors, "fatal", "", "validator failed: " + e);
    }
    return "\"errors\": [" + errors + "], \"warnings\": " + warnings + "}";
  }

  private static void error(StringBuilder out, String severity, String location, String message) {
    if (out.length() > 0) {
      out.append(", ");
    }
    out.append("{\"severity\": ").append(quote(severity));
    out.append(", \"location\": ").append(quote(location));
    out.append(", \"message\": ").append(quote(message)).append('}');
  }

  static String quote(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : (text == null ? "" : text).toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }

  public static void main(String[] args) throws Exception {
    // The protocol owns stdout: anything the libraries print goes to stderr.
    PrintStream out =
        new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    System.setOut(System.err);
    FhirValidator validator = validator();
    if (args.length > 0) {
      boolean failed = false;
      for (String file : args) {
        String line = report(validator, Files.readString(Path.of(file), StandardCharsets.UTF_8));
        failed |= !line.startsWith("\"errors\": []");
        out.println("{\"file\": " + quote(file) + ", " + line);
      }
      out.flush();
      System.exit(failed ? 1 : 0);
    }
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      if (line.isBlank()) {
        StringBuilder errors = new StringBuilder();
        error(errors, "fatal", "", "empty input line");
        out.println("{\"errors\": [" + errors + "], \"warnings\": 0}");
      } else {
        out.println("{" + report(validator, line));
      }
      out.flush();
    }
  }
}
